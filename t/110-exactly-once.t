# Exactly once under duplicates, deliveries naming other shops, uncertain
# outcomes, a worker killed at the worst moment, and BC throttling: each
# Shopify order ends as one BC sales order.  Each case uses the basic
# order under its own order id.  First, two checks of the harness:
# start_worker waits for the ledger, and a failing file shows its logs.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(sleep);
use ShopifyBC::Test;

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';
my $SHIPPING = '40400';

my $run = sprintf '%x%x', time, $$;
my $stream = "t:110:$run";

start_sandbox();
my $db = create_database('e2e_exactly_once');
my $nginx = start_nginx(stream => $stream);
my %wopt = (database => $db, stream => $stream, company => $COMPANY,
            shipping_account => $SHIPPING, name => 'worker-a');

# start_worker returns once the worker has migrated the ledger, even when
# the migration is held back: a session holds the migration's advisory
# lock (worker/src/ledger.c, SBW_MIGRATE_LOCK) for two seconds.
my $holder = fork // die "fork: $!";
if ($holder == 0) {
    exec 'psql', '-X', '-q', '-d', $db, '-c',
        'SELECT pg_advisory_lock(7426337), pg_sleep(2)';
    die "exec psql: $!";
}
wait_until('migration lock held', 10, sub {
    (psql($db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
               . " AND objid = 7426337 AND granted"))[0][0];
});
my $worker = start_worker(%wopt);
my ($has_ledger) = psql($db, "SELECT to_regclass('bc_order_ledger')"
                             . " IS NOT NULL");
is $has_ledger->[0], 't', 'start_worker waited for the migration';
waitpid $holder, 0;

# a worker that cannot start: start_worker says so and shows its log, and
# a failing test file prints the tail of every log it kept
{
    my $out = `$^X -It/lib -MTest::More -MShopifyBC::Test -e '
        start_sandbox();
        eval { start_worker(database => "postgresql://", stream => "x",
                            name => "no-company",
                            shipping_account => "40400") };
        print STDERR "start_worker: \$@";
        ok(0, "forced failure");
        done_testing();' 2>&1`;
    my $exited = 'worker exited with status 2 before it was ready';
    like $out, qr/start_worker: $exited.*config_invalid/s,
        'start_worker reports a worker that exits, with its log';
    my $shown = qr/last \d+ lines? of \S+/;
    like $out, qr/$shown\/worker-no-company\.log:\n# \{[^\n]*config_inv/,
        'a failing file prints the worker log';
    like $out, qr/$shown\/sandbox-\d+\.log:\n# sandbox: listening/,
        'a failing file prints the sandbox log';
}

my $BASIC = fixture('orders-create-basic.json');
my $next_id = 7000000000000 + ($$ % 1000) * 1000;

# the basic order under a new Shopify order id
sub order_body {
    my $id = ++$next_id;
    (my $body = $BASIC) =~ s/^\{"id":\d+,/{"id":$id,/ or die 'no id';
    return ($id, $body);
}

sub ledger {
    my ($id) = @_;
    my ($row) = psql($db, "SELECT state, coalesce(bc_number, ''), attempts,"
        . " external_document_number FROM bc_order_ledger"
        . " WHERE shopify_order_id = $id");
    return $row;
}

sub settled {
    my ($id, $timeout) = @_;
    return wait_until("order $id settled", $timeout // 60, sub {
        my $r = ledger($id);
        $r && ($r->[0] eq 'created' || $r->[0] eq 'failed') ? $r : undef;
    });
}

sub bc_copies {
    my ($ext) = @_;
    return scalar grep { $_->{order}{externalDocumentNumber} eq $ext }
        @{ sandbox_orders() };
}

sub webhook { "$run-" . join '-', @_ }

# the worker's log lines about one order
sub order_log {
    my ($id) = @_;
    open my $fh, '<', $worker->{log} or die "$worker->{log}: $!";
    my @lines;
    while (my $line = <$fh>) {
        my $j = eval { json()->decode($line) } or next;
        push @lines, $j if ($j->{order} // '') eq $id;
    }
    return @lines;
}

# --- one order id under other spellings of the shop, and another shop ---
# X-Shopify-Shop-Domain is not covered by the HMAC, and Shopify order ids
# are unique across shops: the order id alone is the order's identity.
{
    my ($id, $body) = order_body();
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'delivered by acme-demo';
    settled($id);
    my @shops = ('ACME-DEMO.MYSHOPIFY.COM', 'Acme-Demo.myshopify.com',
                 'attacker-replay.myshopify.com');
    for my $shop (@shops) {
        is deliver($nginx, $body, 'X-Shopify-Shop-Domain' => $shop,
                   'X-Shopify-Webhook-Id' => webhook($id, $shop)), 200,
            "delivered again as $shop";
    }
    wait_until('an outcome for every delivery', 30, sub {
        4 <= grep { $_->{event} =~ /^order_(created|duplicate|failed)/ }
            order_log($id);
    });
    my @rows = psql($db, "SELECT shop, state, attempts FROM bc_order_ledger"
                         . " WHERE shopify_order_id = $id");
    is scalar(@rows), 1, 'other shops: one ledger row';
    is_deeply $rows[0], ['acme-demo.myshopify.com', 'created', 1],
        'other shops: the first shop, created, one attempt';
    is bc_copies("SHOPIFY-$id"), 1, 'other shops: one BC order';
    my @dup = grep { $_->{event} eq 'order_duplicate' } order_log($id);
    is scalar(@dup), 3, 'other shops: three duplicates';
    my @warn = grep { $_->{event} eq 'order_shop_mismatch' } order_log($id);
    is scalar(@warn), 1, 'other shops: one order_shop_mismatch line';
    is_deeply [map { @$_{qw(level shop ledger_shop)} } @warn],
        ['warn', 'attacker-replay.myshopify.com', 'acme-demo.myshopify.com'],
        'order_shop_mismatch names both shops';
}

# --- the same delivery twice --------------------------------------------
{
    my ($id, $body) = order_body();
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'first delivery';
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'same delivery again';
    my $row = settled($id);
    is $row->[0], 'created', 'duplicate delivery: created';
    is bc_copies($row->[3]), 1, 'duplicate delivery: one BC order';
}

# --- the same order under two webhook ids -------------------------------
{
    my ($id, $body) = order_body();
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id, 'a')),
        200, 'first webhook id';
    settled($id);
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id, 'b')),
        200, 'second webhook id, same order';
    wait_until('second entry acknowledged', 30, sub {
        redis('XPENDING', $stream, 'bc-sync') =~ /^0/;
    });
    my $row = ledger($id);
    is $row->[0], 'created', 'two webhook ids: created';
    is $row->[2], 1, 'two webhook ids: one attempt';
    is bc_copies($row->[3]), 1, 'two webhook ids: one BC order';
}

# --- one order under eight webhook ids at once ---------------------------
# The worker's threads take the copies in parallel; BC is slowed so that
# they overlap while the first POST is on the wire.
{
    my ($id, $body) = order_body();
    sandbox_faults({ method => 'POST', path_regex => 'salesOrders',
                     times => 1, latency_ms => 800 });
    my @pids;
    for my $copy (1 .. 8) {
        my $pid = fork // die $!;
        if ($pid == 0) {
            my $s = deliver($nginx, $body,
                            'X-Shopify-Webhook-Id' => webhook($id, "c$copy"));
            exit($s == 200 ? 0 : 1);
        }
        push @pids, $pid;
    }
    my $failed = 0;
    for (@pids) { waitpid $_, 0; $failed++ if $? }
    is $failed, 0, 'eight webhook ids at once: all accepted';
    my $row = settled($id);
    wait_until('all copies acknowledged', 30, sub {
        redis('XPENDING', $stream, 'bc-sync') =~ /^0/;
    });
    is $row->[0], 'created', 'eight webhook ids at once: created';
    is bc_copies($row->[3]), 1, 'eight webhook ids at once: one BC order';
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- BC commits the order, then the response fails ----------------------
{
    my ($id, $body) = order_body();
    sandbox_faults({ method => 'POST', path_regex => 'salesOrders',
                     times => 1, action => 'commit_then_fail',
                     status => 500 });
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'delivered';
    my $row = settled($id);
    is $row->[0], 'created', 'commit then 500: created';
    is bc_copies($row->[3]), 1, 'commit then 500: still one BC order';
    ok $row->[2] >= 1, "commit then 500: attempts $row->[2]";
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- worker SIGKILLed after BC created the order, before the ledger -----
{
    my ($id, $body) = order_body();
    sandbox_faults({ method => 'POST', path_regex => 'salesOrders',
                     times => 1, action => 'commit_then_hold',
                     hold_ms => 4000 });
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'delivered';
    wait_until('BC has the order', 30, sub {
        grep { $_->{order}{externalDocumentNumber} =~ /$id/ }
            @{ sandbox_orders() };
    });
    my $row = ledger($id);
    isnt $row->[0], 'created', 'ledger does not know the BC order yet';
    stop_worker($worker, 'KILL');
    $worker = start_worker(%wopt);
    $row = settled($id);
    is $row->[0], 'created', 'after SIGKILL and restart: created';
    is bc_copies($row->[3]), 1, 'after SIGKILL and restart: one BC order';
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- worker SIGKILLed while its order waits for BC's budget -------------
# The window allows one request: the customer look-up takes it and the
# POST waits in the limiter.  Nothing was sent, so the order must not be
# in doubt (an attempt in doubt costs a look-up and the in-doubt wait).
{
    stop_worker($worker, 'TERM');
    my $mport = free_port();
    my $tight = start_worker(%wopt, name => 'worker-budget',
                             metrics_port => $mport,
                             env => { BC365_RATE_LIMIT_REQUESTS => 1,
                                      BC365_RATE_LIMIT_WINDOW_MS => 600000 });
    my ($id, $body) = order_body();
    my $since = sandbox_call('GET', '/_sandbox/requests')->{last};
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'delivered';
    wait_until('the look-up has used the budget', 30, sub {
        grep { $_->{path} =~ /customers$/ }
            @{ sandbox_call('GET', "/_sandbox/requests?since=$since")->{value} };
    });
    sleep 1.5;
    # the wait shows in the metrics: the limiter holds one request for the
    # rate, and the group has the entry pending (refreshed every 5 s)
    my $m = wait_until('the metrics show the wait', 15, sub {
        my $t = HTTP::Tiny->new(timeout => 5)
            ->get("http://127.0.0.1:$mport/metrics")->{content} // '';
        $t =~ /^worker_stream_pending [1-9]/m ? $t : undef;
    });
    like $m, qr/^bc_limiter_waiting 1$/m, 'metrics: one request waiting';
    like $m, qr/^bc_limiter_waits_total\{reason="rate"\} 1$/m,
        'metrics: held by the rate window';
    like $m, qr/^worker_stream_lag 0$/m, 'metrics: nothing left undelivered';
    stop_worker($tight, 'KILL');
    my $row = ledger($id);
    ok $row, 'the order is in the ledger';
    is $row->[2], 0, 'waiting for the budget: no attempt recorded';
    isnt $row->[0], 'attempting', 'waiting for the budget: not in doubt';
    is bc_copies("SHOPIFY-$id"), 0, 'BC has no such order';
    # the same consumer again, with BC's budget: it reads its pending entry
    $tight = start_worker(%wopt, name => 'worker-budget');
    $row = settled($id);
    is $row->[0], 'created', 'after the restart: created';
    is $row->[2], 1, 'after the restart: one attempt';
    is bc_copies($row->[3]), 1, 'after the restart: one BC order';
    stop_worker($tight, 'TERM');
    $worker = start_worker(%wopt);
}

# --- BC answers 429, then 201 -------------------------------------------
{
    my ($id, $body) = order_body();
    my $since = sandbox_call('GET', '/_sandbox/requests')->{last};
    sandbox_faults({ method => 'POST', path_regex => 'salesOrders',
                     times => 1, status => 429, retry_after => 1 });
    is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => webhook($id)), 200,
        'delivered';
    my $row = settled($id);
    is $row->[0], 'created', '429 then 201: created';
    is bc_copies($row->[3]), 1, '429 then 201: one BC order';
    my @posts = map { $_->{status} }
        grep { $_->{method} eq 'POST' && $_->{path} =~ /salesOrders/ }
        @{ sandbox_call('GET', "/_sandbox/requests?since=$since")->{value} };
    is_deeply \@posts, [429, 201], '429 then 201: two POSTs, honouring 429';
    sandbox_call('DELETE', '/_sandbox/faults');
}

done_testing();

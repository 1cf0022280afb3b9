# Chaos: every orders/create fixture, under fresh order ids, goes through
# nginx (signed, enqueued as in production) to Redis, the worker and the
# BC sandbox while, at random moments of a seeded schedule:
#
#   - the worker is SIGKILLed and started again (several times a run,
#     sometimes under another WORKER_NAME, as if another host took over),
#   - Redis is restarted (SIGTERM or SIGKILL; nginx answers 503 meanwhile
#     and the sender retries, as Shopify does),
#   - PostgreSQL is restarted (fast shutdown, or a crash),
#   - about 20 % of the BC calls fail: 429 with Retry-After, 500, 503, a
#     dropped connection, a hold longer than the worker's timeout (a POST
#     is then carried out after its client gave up), BC committing and
#     then dropping the answer, answering 5xx or answering too late,
#   - one or two poison messages are mixed in (an item BC does not know,
#     a line whose variant is not mapped, an impossible price, a body that
#     is not JSON), and some orders are delivered twice.
#
# Then, once the worker has drained: each good order is exactly one BC
# document (open or posted) with its externalDocumentNumber and a
# totalAmountIncludingTax equal to Shopify's total_price, the ledger and
# the totals check agree, the poison messages are dead letters with their
# reason (and nothing else is), nothing is pending, the worker never died
# but by our SIGKILL.
#
#   CHAOS_RUNS   runs in this file (2; `make soak` runs 20)
#   SEED         seed of the first run (run n uses SEED + n - 1); the
#                seed of each run is printed.  It fixes the schedule,
#                the orders, the poison and the fault draws; the threads'
#                interleaving is the machine's, so a failure may need a
#                few tries with its seed to show again.
#   CHAOS_COPIES copies of each fixture per run (2)

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use ShopifyBC::Test;

my $RUNS = $ENV{CHAOS_RUNS} // 2;
my $COPIES = $ENV{CHAOS_COPIES} || 2;
my $SEED = $ENV{SEED} // (int(time * 1000) ^ ($$ << 8)) % 1_000_000_000;
$RUNS =~ /^\d+$/ && $COPIES =~ /^\d+$/ && $SEED =~ /^\d+$/
    or BAIL_OUT('CHAOS_RUNS, CHAOS_COPIES and SEED are whole numbers');
$ENV{PG_THROWAWAY_DIR}
    or plan skip_all => 'needs the cluster of scripts/pg-throwaway.sh'
                        . ' (run it with scripts/test.sh)';
diag("chaos: SEED=$SEED CHAOS_RUNS=$RUNS CHAOS_COPIES=$COPIES");

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';
my %ACCOUNT = (shipping => '40400', tip => '22300', gift_card => '22150',
               custom_line => '40250');
# the worker gives up on a BC call after BC_TIMEOUT_MS; BC carries a call
# out at most MAX_EXECUTION_MS after it arrived (10 minutes in BC online,
# here 3.5 s), and the worker posts an order in doubt again only
# INDOUBT_WAIT_MS after its attempt began (BC's limit plus a margin)
my $BC_TIMEOUT_MS = 1200;
my $MAX_EXECUTION_MS = 3500;
my $INDOUBT_WAIT_MS = 5000;

my $tmp = tempdir('chaos.XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $tmp;
my $OWNER = $$;

# --- a Redis of this file's own, so that it can be restarted ------------
my $REDIS_PORT = free_port();
$ENV{TEST_NGINX_REDIS_PORT} = $REDIS_PORT;   # nginx, worker, redis()
my $redis_pid;
my $redis_log = "$tmp/redis.log";

sub redis_start {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $redis_log;
        open STDERR, '>&', \*STDOUT;
        { exec 'redis-server', '--bind', '127.0.0.1', '--port', $REDIS_PORT,
            '--dir', $tmp, '--appendonly', 'yes', '--appendfsync', 'always',
            '--save', '', '--maxmemory-policy', 'noeviction',
            '--daemonize', 'no' }
        POSIX::_exit(127);
    }
    $redis_pid = $pid;
    wait_until('redis up', 30, sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$REDIS_PORT",
                              Timeout => 1)
            && redis('PING') eq 'PONG';
    });
}

sub redis_restart {
    my ($signal) = @_;
    kill $signal, $redis_pid;
    waitpid $redis_pid, 0;
    sleep rand 1;
    redis_start();
}

# --- PostgreSQL: the suite's throwaway cluster --------------------------
sub pg_restart {
    my ($how) = @_;    # restart (fast shutdown) or crash-restart
    system("$ENV{PG_THROWAWAY_DIR}/$how") == 0
        or die "PostgreSQL $how failed\n";
}

redis_start();
my $run_tag = sprintf '%x%x', time, $$;
my $stream = "t:160:$run_tag";
my $sandbox = start_sandbox('max-execution-ms' => $MAX_EXECUTION_MS);
my $db = create_database('e2e_chaos');
my $nginx = start_nginx(stream => $stream, redis_timeout => '1s');

sub sq { [map { $_->[0] } psql($db, $_[0])] }
sub sq1 { sq($_[0])->[0] }

my $worker;
my @worker_trouble;    # exits we did not cause

sub worker_start {
    my ($name, $concurrency) = @_;
    my $port = free_port();
    $worker = start_worker(
        database => $db, stream => $stream, company => $COMPANY,
        shipping_account => $ACCOUNT{shipping}, name => $name,
        metrics_port => $port,
        env => {
            BC365_TIP_ACCOUNT => $ACCOUNT{tip},
            BC365_GIFT_CARD_ACCOUNT => $ACCOUNT{gift_card},
            BC365_CUSTOM_LINE_ACCOUNT => $ACCOUNT{custom_line},
            BC365_TIMEOUT_MS => $BC_TIMEOUT_MS,
            BC365_CONNECT_TIMEOUT_MS => 1000,
            BC365_INDOUBT_WAIT_MS => $INDOUBT_WAIT_MS,
            WORKER_CONCURRENCY => $concurrency,
            RETRY_BASE_MS => 100, RETRY_MAX_MS => 1000,
            RETRY_AFTER_MAX_MS => 1000,
            REDIS_TIMEOUT_MS => 2000, STREAM_BLOCK_MS => 500,
            CLAIM_MIN_IDLE_MS => 3000, CLAIM_INTERVAL_MS => 1000,
            TRIM_INTERVAL_MS => 2000,
            # report duplicates, never remove them: a second order must
            # stay visible to this test
            DUPLICATE_CHECK_INTERVAL_MS => 2000, DUPLICATE_REMOVE => 0,
            LOG_LEVEL => 'info',
        });
    $worker->{name} = $name;
    $worker->{metrics_port} = $port;
    $worker->{concurrency} = $concurrency;
    return $worker;
}

# SIGKILL; an exit of its own before it is noted as trouble
sub worker_kill {
    my $w = $worker;
    if (waitpid($w->{pid}, WNOHANG) == $w->{pid}) {
        push @worker_trouble, "worker $w->{name} (pid $w->{pid}) exited by"
            . " itself before it was killed: status " . ($? >> 8)
            . ', signal ' . ($? & 127);
    }
    my $st = stop_worker($w, 'KILL');
    push @worker_trouble, "worker $w->{name} (pid $w->{pid}) did not die"
        . " of SIGKILL: \$? = $st" if $st != -1 && ($st & 127) != 9;
}

sub metric {
    my ($name) = @_;
    my $res = HTTP::Tiny->new(timeout => 5)->get(
        "http://127.0.0.1:$worker->{metrics_port}/metrics");
    return undef unless $res->{success};
    return $res->{content} =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

sub money { sprintf '%.2f', $_[0] }

# --- the orders ---------------------------------------------------------
my @FIXTURES = map { s{.*/}{}r }
    sort glob top() . '/fixtures/shopify/orders-create-*.json';
my %EXPECTED = map { $_ => expected($_) } @FIXTURES;
my $BASIC = fixture('orders-create-basic.json');

# the fixture's delivery headers, without signature, ids and length
sub headers_of {
    my ($name) = @_;
    my $h = fixture_headers($name);
    return map { $_ => $h->{$_} }
        grep { /^X-Shopify-/ && !/Hmac|Webhook-Id|Event-Id/ } keys %$h;
}

sub with_id {
    my ($body, $id) = @_;
    $body =~ s/^\{"id":\d+,/{"id":$id,/ or die 'no order id';
    return $body;
}

# poison: a body, the dead letter's reason and error code
my %POISON = (
    unknown_item => sub {
        my ($id) = @_;
        (my $b = with_id($BASIC, $id))
            =~ s/"sku":"1896-S"/"sku":"NO-SUCH-ITEM"/ or die;
        return ($b, 'bc_rejected', 'Application_DialogException');
    },
    unmapped_variant => sub {
        my ($id) = @_;
        my $o = json()->decode(with_id($BASIC, $id));
        $o->{line_items}[0]{sku} = '';
        $o->{line_items}[0]{variant_id} = 45599999000999;
        return (json()->encode($o), 'unmapped_lines',
                'Mapping_UnsupportedLines');
    },
    negative_price => sub {
        my ($id) = @_;
        (my $b = with_id($BASIC, $id))
            =~ s/"price":"1000.80"/"price":"-1000.80"/ or die;
        return ($b, 'mapping', 'Mapping_InvalidOrder');
    },
    not_json => sub {
        my ($id) = @_;
        return (qq({"id":$id,"line_items":[{"sku":), 'invalid_entry',
                'Worker_InvalidEntry');
    },
);

sub shuffle {
    my @a = @_;
    for (my $i = $#a; $i > 0; $i--) {
        my $j = int rand($i + 1);
        @a[$i, $j] = @a[$j, $i];
    }
    return @a;
}

# --- the sender: Shopify delivering, retrying what was not answered 200 --
sub start_sender {
    my ($deliveries, $out) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    open my $fh, '>', $out or POSIX::_exit(2);
    $fh->autoflush(1);
    for my $d (@$deliveries) {
        sleep $d->{gap};
        my ($tries, $status) = (0, 0);
        my $deadline = time + 120;
        while (time < $deadline) {
            $tries++;
            $status = deliver($nginx, $d->{body}, %{ $d->{headers} });
            last if $status == 200;
            sleep 0.2 + rand 0.3;
        }
        print $fh "$d->{key}\t$status\t$tries\n";
    }
    close $fh;
    POSIX::_exit(0);
}

END {
    return unless $$ == $OWNER;
    kill 'TERM', $redis_pid if $redis_pid;
    waitpid $redis_pid, 0 if $redis_pid;
}

# --- one run --------------------------------------------------------------
my $next_id = 9100000000000 + ($$ % 1000) * 100000;

sub one_run {
    my ($run, $seed) = @_;
    srand($seed);
    my $t_start = time;
    my $log_since = sandbox_call('GET', '/_sandbox/requests')->{last} // 0;

    # the faults of this run: about 20 % of the BC calls (not the token)
    my $latency = 1500 + int rand 1000;
    my @kinds = (
        [{ status => 429, retry_after => 1 }, 0.05],
        [{ status => 500 }, 0.03],
        [{ status => 503 }, 0.03],
        [{ action => 'drop' }, 0.01],
        [{ latency_ms => $latency }, 0.04],
        [{ action => 'commit_then_drop' }, 0.02],
        [{ action => 'commit_then_fail', status => (500, 502, 504)[rand 3] },
         0.03],
        [{ action => 'commit_then_hold', hold_ms => $BC_TIMEOUT_MS + 800 },
         0.02],
    );
    # and BC's own pace: every call takes a while, as in BC online
    my $bc_latency = 50 + int rand 200;
    sandbox_call('POST', '/_sandbox/config', { latency_ms => $bc_latency });
    my $n = 0;
    sandbox_faults(
        # writes are where exactly once is at stake: a few more of them
        # are carried out after the worker gave up on them
        { method => 'POST', path_regex => '/api/v2\.0/companies',
          latency_ms => $latency, probability => 0.05, seed => $seed * 16 },
        map {
            { path_regex => '/api/v2\.0/companies', %{ $_->[0] },
              probability => $_->[1], seed => $seed * 16 + ++$n }
        } @kinds);

    # the orders: every fixture $COPIES times, then the poison, then some
    # deliveries again (same webhook id: the intake's duplicate; a new
    # one: the worker's)
    my (%good, @poison, @deliveries);
    for my $name (@FIXTURES) {
        for (1 .. $COPIES) {
            my $id = ++$next_id;
            my $body = with_id(fixture($name), $id);
            my $total = json()->decode($body)->{total_price};
            $good{$id} = { name => $name, total => $total };
            push @deliveries, {
                key => "order $id ($name)", body => $body,
                headers => { headers_of($name),
                             'X-Shopify-Webhook-Id' => "$run_tag-$id",
                             'X-Shopify-Event-Id' => "$run_tag-e-$id" } };
        }
    }
    my @kinds_of_poison = shuffle(sort keys %POISON);
    for my $what (@kinds_of_poison[0 .. int rand 2]) {
        my $id = ++$next_id;
        my ($body, $reason, $code) = $POISON{$what}->($id);
        my $wh = "$run_tag-poison-$id";
        push @poison, { what => $what, id => $id, webhook => $wh,
                        reason => $reason, code => $code, body => $body };
        push @deliveries, {
            key => "poison $id ($what)", body => $body,
            headers => { headers_of('orders-create-basic.json'),
                         'X-Shopify-Webhook-Id' => $wh } };
    }
    @deliveries = shuffle(@deliveries);
    my @again;
    for my $d (grep { $_->{key} =~ /^order/ } @deliveries) {
        next unless rand() < 0.25;
        my %h = %{ $d->{headers} };
        my $how = 'same webhook id';
        if (rand() < 0.5) {
            $how = 'another webhook id';
            $h{'X-Shopify-Webhook-Id'} .= '-again';
            delete $h{'X-Shopify-Event-Id'};
        }
        push @again, { %$d, key => "$d->{key} again, $how", headers => \%h };
    }
    for my $d (@again) {
        splice @deliveries, int(rand(@deliveries + 1)), 0, $d;
    }
    $_->{gap} = rand 0.8 for @deliveries;

    # the schedule: kills (each followed by its start, sometimes with a
    # restart of Redis or PostgreSQL while the worker is down), Redis and
    # PostgreSQL restarts, in random order with random gaps
    my @events = shuffle(('kill') x (2 + int rand 3),
                         'redis ' . (rand() < 0.5 ? 'TERM' : 'KILL'),
                         'pg ' . (rand() < 0.5 ? 'restart' : 'crash-restart'));
    for (my $i = 0; $i < @events; $i++) {
        next unless $events[$i] eq 'kill';
        my $at = $i + 1;
        $at++ if $at < @events && $events[$at] ne 'kill' && rand() < 0.3;
        splice @events, $at, 0, 'start';
    }

    my $sender_out = "$tmp/sender-$run.txt";
    my $sender = start_sender(\@deliveries, $sender_out);
    my @done;
    my $t = time;
    for my $ev (@events) {
        sleep($ev eq 'start' ? rand 1.5 : 0.3 + rand 1.7);
        my $when = sprintf '%.1fs', time - $t;
        if ($ev eq 'kill') {
            # half of the kills wait (a little) for a BC call in flight
            my $busy = '';
            if (rand() < 0.5) {
                my $until = time + 2;
                while (time < $until) {
                    my $st = sandbox_call('GET', '/_sandbox/stats');
                    my $p = $st->{principals}{ $sandbox->{client_id} } || {};
                    if (($p->{active} // 0) + ($p->{queued} // 0) > 0) {
                        $busy = ' (BC call in flight)';
                        last;
                    }
                    sleep 0.02;
                }
                $when = sprintf '%.1fs', time - $t;
            }
            worker_kill();
            push @done, "$when kill $worker->{name}$busy";
        } elsif ($ev eq 'start') {
            my $name = rand() < 0.3 ? 'chaos-b' : 'chaos-a';
            my $conc = (1, 3, 6)[rand 3];
            eval { worker_start($name, $conc); 1 } or do {
                push @worker_trouble, "worker $name did not start: $@";
                last;
            };
            push @done, "$when start $name x$conc";
        } elsif ($ev =~ /^redis (\w+)/) {
            redis_restart($1);
            push @done, "$when redis $1";
        } elsif ($ev =~ /^pg (\S+)/) {
            pg_restart($1);
            push @done, "$when pg $1";
        }
    }
    waitpid $sender, 0;
    my $sender_ok = $? == 0;
    my $chaos_s = time - $t;

    # every delivery answered 200 in the end
    my %sent;
    if (open my $fh, '<', $sender_out) {
        while (my $line = <$fh>) {
            chomp $line;
            my ($k, $s, $tries) = split /\t/, $line;
            $sent{$k} = [$s, $tries];
        }
    }
    my @unsent = grep { ($sent{$_->{key}}[0] // 0) != 200 } @deliveries;
    ok $sender_ok && !@unsent, "run $run: every delivery accepted by the intake"
        . ' (' . scalar(@deliveries) . ', '
        . (grep { $_->[1] > 1 } values %sent) . ' after a retry)'
        or diag("not accepted: " . join ', ', map { $_->{key} } @unsent);

    # --- drained? -----------------------------------------------------------
    my $ids = join ',', keys %good;
    my $pids = join ',', map { $_->{id} } @poison;
    my $pending_of = sub {
        my @p = split /\n/, redis('XPENDING', $stream, 'bc-sync');
        my %g = split /\n/, redis('XINFO', 'GROUPS', $stream);
        my @s = split /\n/, redis('XINFO', 'STREAM', $stream);
        my %s = map { $s[$_] => $s[$_ + 1] }
            grep { $s[$_] eq 'last-generated-id' } 0 .. $#s - 1;
        # nothing pending, and the group has read the stream's last entry
        return (($p[0] // 'x') eq '0' && $g{'last-delivered-id'}
                && $g{'last-delivered-id'} eq ($s{'last-generated-id'} // ''))
            ? 0 : 1;
    };
    my $settled = eval {
        wait_until("run $run drained", 240, sub {
            my $open = sq1("SELECT count(*) FROM bc_order_ledger l"
                . " LEFT JOIN bc_order_sync s USING (shopify_order_id)"
                . " WHERE l.shopify_order_id IN ($ids)"
                . " AND (l.state <> 'created'"
                . "  OR coalesce(s.totals_state, 'pending') = 'pending')");
            my $have = sq1("SELECT count(*) FROM bc_order_ledger"
                           . " WHERE shopify_order_id IN ($ids)");
            my $dl = sq1("SELECT count(*) FROM dead_letters WHERE webhook_id"
                . " IN (" . join(',', map { "'$_->{webhook}'" } @poison) . ")");
            $open == 0 && $have == keys %good && $dl == @poison
                && !$pending_of->() && (metric('worker_retry_queue') // 1) == 0;
        });
    };
    ok $settled, "run $run: the worker drained everything"
        or diag("not drained: $@");

    # --- the outcome ----------------------------------------------------------
    my %ledger = map { $_->[0] => $_ } psql($db,
        "SELECT l.shopify_order_id, l.state, coalesce(l.bc_id, ''),"
        . " coalesce(l.bc_number, ''), l.external_document_number,"
        . " coalesce(l.error_code, ''), l.attempts,"
        . " coalesce(s.totals_state, ''), coalesce(s.bc_total::text, ''),"
        . " coalesce(s.shopify_total::text, '')"
        . " FROM bc_order_ledger l LEFT JOIN bc_order_sync s"
        . " USING (shopify_order_id)"
        . " WHERE l.shopify_order_id IN ($ids" . ($pids ? ",$pids" : '') . ')');
    my %bc;
    push @{ $bc{ $_->{order}{externalDocumentNumber} } }, $_
        for @{ sandbox_orders() };

    my @wrong;
    for my $id (sort keys %good) {
        my $g = $good{$id};
        my $ext = "SHOPIFY-$id";
        my $docs = $bc{$ext} || [];
        my $l = $ledger{$id};
        if (@$docs != 1) {
            push @wrong, "$id ($g->{name}): " . @$docs . ' BC documents';
            next;
        }
        my $o = $docs->[0]{order};
        my $total = money($o->{totalAmountIncludingTax});
        push @wrong, "$id ($g->{name}): BC total $total, Shopify's"
            . " $g->{total}" if $total ne $g->{total};
        push @wrong, "$id ($g->{name}): BC total $total, the fixtures'"
            . " $EXPECTED{$g->{name}}{amountIncludingTax}"
            if $total ne $EXPECTED{$g->{name}}{amountIncludingTax};
        if (!$l) {
            push @wrong, "$id ($g->{name}): no ledger row";
            next;
        }
        push @wrong, "$id ($g->{name}): ledger $l->[1] $l->[2] $l->[3]"
            . " $l->[4], BC $o->{id} $o->{number}"
            unless $l->[1] eq 'created' && $l->[2] eq $o->{id}
                && $l->[3] eq $o->{number} && $l->[4] eq $ext;
        push @wrong, "$id ($g->{name}): totals $l->[7] $l->[8]/$l->[9]"
            unless ($l->[7] eq 'matched' || $l->[7] eq 'variance')
                && $l->[8] eq $g->{total} && $l->[9] eq $g->{total};
    }
    is_deeply \@wrong, [], "run $run: " . keys(%good) . ' orders, each one'
        . " BC document with Shopify's total, the ledger agreeing";

    # the poison: dead letters with their reason, no BC order; and no
    # other dead letter of this run (no max_deliveries, duplicate or
    # total mismatch)
    my @bad;
    for my $p (@poison) {
        my ($dl) = psql($db, "SELECT reason, error_code, status,"
            . " coalesce(shopify_order_id::text, ''),"
            . " payload = \$b\$$p->{body}\$b\$"
            . " FROM dead_letters WHERE webhook_id = '$p->{webhook}'");
        my $want = join ' ', $p->{reason}, $p->{code}, 'open',
            $p->{what} eq 'not_json' ? '' : $p->{id}, 't';
        my $got = $dl ? join ' ', @$dl : 'no dead letter';
        push @bad, "$p->{what}: $got, not $want" if $got ne $want;
        my $l = $ledger{ $p->{id} };
        my $lw = $p->{what} eq 'not_json' ? 'none' : "failed $p->{code}";
        my $lg = $l ? "$l->[1] $l->[5]" : 'none';
        push @bad, "$p->{what}: ledger $lg, not $lw" if $lg ne $lw;
        my $docs = $bc{"SHOPIFY-$p->{id}"} || [];
        push @bad, "$p->{what}: " . @$docs . ' BC documents' if @$docs;
    }
    my @ours = (keys %good, map { $_->{id} } @poison);
    my $others = sq("SELECT id || ' ' || reason || ' ' || coalesce("
        . "shopify_order_id::text, '') || ' ' || coalesce(error_message, '')"
        . " FROM dead_letters WHERE (shopify_order_id IN (" . join(',', @ours)
        . ") OR webhook_id LIKE '$run_tag-%') AND webhook_id NOT IN ("
        . join(',', map { "'$_->{webhook}'" } @poison) . ')'
        . " AND created_at >= to_timestamp($t_start)");
    push @bad, map { "unexpected dead letter $_" } @$others;
    is_deeply \@bad, [], "run $run: poison ("
        . join(', ', map { $_->{what} } @poison) . ') dead-lettered with'
        . ' its reason, the others not held up, no other dead letter';

    is sq1("SELECT count(*) FROM bc_order_ledger WHERE state IN"
           . " ('new', 'attempting')"), 0, "run $run: no order left in the"
        . ' ledger as new or attempting';

    my @log = @{ sandbox_call('GET', "/_sandbox/requests?since=$log_since")
                     ->{value} };
    my @bc_calls = grep { $_->{path} =~ m{/api/v2\.0/companies} } @log;
    my (%faulted, %where);
    for my $c (grep { $_->{fault} } @bc_calls) {
        $faulted{ $c->{fault} }++;
        my ($what) = $c->{path} =~ m{/(\w+)(?:\([^)]*\))?$};
        $where{"$c->{method} $what $c->{fault}"}++;
    }
    note("run $run faults: "
         . join ', ', map { "$_ x$where{$_}" } sort keys %where);
    my $nf = 0;
    $nf += $_ for values %faulted;
    ok $nf > 0, "run $run: faults were injected ($nf of "
        . @bc_calls . ' BC calls)';
    ok !@worker_trouble, "run $run: the worker died only by our SIGKILL"
        or diag(join "\n", @worker_trouble);
    @worker_trouble = ();

    diag(sprintf "run %d (seed %d): %d orders, %d deliveries, poison %s,"
        . " BC latency %d ms; %s; %d of %d BC calls faulted (%s);"
        . " chaos %.0fs, all %.0fs",
        $run, $seed, scalar(keys %good), scalar(@deliveries),
        join('+', map { $_->{what} } @poison), $bc_latency,
        join(', ', @done), $nf,
        scalar(@bc_calls),
        join(' ', map { "$_=$faulted{$_}" } sort keys %faulted),
        $chaos_s, time - $t_start);
    sandbox_call('DELETE', '/_sandbox/faults');
}

worker_start('chaos-a', 3);

# --- first, on purpose, a race the chaos runs found ---------------------
# The rounding-variance line's POST is carried out by BC after the worker
# gave up on it.  The next try reads the order before that, still without
# the line, and adds one: once BC has run the first POST as well, the
# order must still have one variance line and Shopify's total.
{
    my $id = ++$next_id;
    my $name = 'orders-create-discounts.json';
    my $since = sandbox_call('GET', '/_sandbox/requests')->{last} // 0;
    sandbox_faults({ method => 'POST', path_regex => 'salesOrderLines$',
                     times => 1, latency_ms => $BC_TIMEOUT_MS + 1000 });
    is deliver($nginx, with_id(fixture($name), $id), headers_of($name),
               'X-Shopify-Webhook-Id' => "$run_tag-$id"), 200,
        'late variance line: delivered';
    wait_until('BC ran the late POST', 60, sub {
        grep { ($_->{fault} // '') eq 'latency' }
            @{ sandbox_call('GET', "/_sandbox/requests?since=$since")
                   ->{value} };
    });
    wait_until('the totals check done', 60, sub {
        (sq1("SELECT totals_state FROM bc_order_sync"
             . " WHERE shopify_order_id = $id") // 'pending') ne 'pending';
    });
    my @docs = grep { $_->{order}{externalDocumentNumber} eq "SHOPIFY-$id" }
        @{ sandbox_orders() };
    is scalar(@docs), 1, 'late variance line: one BC order';
    my @variance = grep { $_->{lineObjectNumber} eq '40900' }
        @{ $docs[0]{order}{salesOrderLines} };
    is scalar(@variance), 1, 'late variance line: one variance line';
    is money($docs[0]{order}{totalAmountIncludingTax}), '1227.47',
        "late variance line: BC's total is Shopify's 1227.47";
    is sq1("SELECT totals_state || ' ' || bc_total FROM bc_order_sync"
           . " WHERE shopify_order_id = $id"), 'variance 1227.47',
        'late variance line: the totals check says so';
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- the same race for a line an orders/updated adds -------------------
# #1043 is created, then edited: one desk and one chair less (PATCHes) and
# an AMSTERDAM Lamp more, which Shopify did not tax, so that BC's total
# must be 1691.37 + 54.90.  The lamp's POST is held by BC past the
# worker's timeout and carried out late:
#
#   after  BC runs it after the next try has read the order and posted
#          the lamp again (the late one must be refused as a line that
#          exists);
#   before BC runs it between the next try's read and that try's POST
#          (that POST must be refused, and the worker read and plan
#          again instead of giving up or adding a second lamp).
#
# Either way the order ends with one lamp and Shopify's total.
{
    my $edit = json()->decode(fixture('orders-updated.json'));
    my %lamp = %{ $edit->{line_items}[1] };
    my $money = sub {
        my ($a) = @_;
        return { map { $_ => { amount => $a, currency_code => 'USD' } }
                 qw(shop_money presentment_money) };
    };
    %lamp = (%lamp, id => 15120450001077, variant_id => 45512345000077,
             product_id => 8812345000077, sku => '1928-S',
             title => 'AMSTERDAM Lamp', name => 'AMSTERDAM Lamp',
             variant_title => undef, price => '54.90',
             price_set => $money->('54.90'), quantity => 1,
             current_quantity => 1, fulfillable_quantity => 1,
             taxable => JSON::PP::false, tax_lines => [],
             discount_allocations => []);
    push @{ $edit->{line_items} }, \%lamp;
    $edit->{current_total_price} = '1746.27';
    $edit->{current_total_price_set} = $money->('1746.27');
    $edit->{current_subtotal_price} = '1634.10';
    $edit->{current_subtotal_price_set} = $money->('1634.10');

    my %faults = (
        after => [{ method => 'POST', path_regex => 'salesOrderLines$',
                    times => 1, latency_ms => $BC_TIMEOUT_MS + 1500 }],
        # the second rule slows the next try's POST down (within the
        # worker's timeout) so that the late one runs first
        before => [{ method => 'POST', path_regex => 'salesOrderLines$',
                     times => 1, latency_ms => $BC_TIMEOUT_MS + 1000 },
                   { method => 'POST', path_regex => 'salesOrderLines$',
                     times => 1, latency_ms => $BC_TIMEOUT_MS - 200 }],
    );
    for my $case ('after', 'before') {
        my $id = ++$next_id;
        my $t = "late added line ($case)";
        is deliver($nginx, with_id($BASIC, $id),
                   headers_of('orders-create-basic.json'),
                   'X-Shopify-Webhook-Id' => "$run_tag-$id"), 200,
            "$t: create delivered";
        wait_until("$t: created", 60, sub {
            (sq1("SELECT totals_state FROM bc_order_sync"
                 . " WHERE shopify_order_id = $id") // 'pending')
                ne 'pending';
        });
        my $since = sandbox_call('GET', '/_sandbox/requests')->{last} // 0;
        sandbox_faults(@{ $faults{$case} });
        $edit->{id} = $id;
        is deliver($nginx, json()->encode($edit),
                   headers_of('orders-create-basic.json'),
                   'X-Shopify-Topic' => 'orders/updated',
                   'X-Shopify-Webhook-Id' => "$run_tag-$id-edit"), 200,
            "$t: edit delivered";
        my @late;
        wait_until("$t: BC ran the held POSTs", 60, sub {
            @late = grep { ($_->{fault} // '') eq 'latency'
                           && defined $_->{status} }
                @{ sandbox_call('GET', "/_sandbox/requests?since=$since")
                       ->{value} };
            @late == @{ $faults{$case} };
        });
        wait_until("$t: the edit applied", 60, sub {
            (sq1("SELECT totals_state FROM bc_order_sync"
                 . " WHERE shopify_order_id = $id AND last_updated_at"
                 . " = '2026-03-17T14:05:12-04:00'") // 'pending')
                ne 'pending';
        });
        is join(' ', map { $_->{status} } @late),
            $case eq 'after' ? '409' : '201 409',
            "$t: BC refused the second lamp"
            . ($case eq 'before' ? ", the next try's" : ", the late one");
        my @docs = grep {
            $_->{order}{externalDocumentNumber} eq "SHOPIFY-$id"
        } @{ sandbox_orders() };
        is scalar(@docs), 1, "$t: one BC order";
        is join(' ', map { "$_->{lineObjectNumber}x" . ($_->{quantity} + 0) }
                     grep { $_->{lineType} ne 'Comment' }
                     @{ $docs[0]{order}{salesOrderLines} }),
            '1896-Sx1 1900-Sx3 1928-Sx1 40400x1',
            "$t: the edited lines, one lamp";
        is money($docs[0]{order}{totalAmountIncludingTax}), '1746.27',
            "$t: BC's total is Shopify's 1746.27";
        is sq1("SELECT sync_state || ' ' || totals_state || ' ' || bc_total"
               . " FROM bc_order_sync WHERE shopify_order_id = $id"),
            'open matched 1746.27', "$t: the totals check says so";
        is sq1("SELECT count(*) FROM dead_letters"
               . " WHERE shopify_order_id = $id"), 0,
            "$t: nothing for review";
        my $log = do { local (@ARGV, $/) = ($worker->{log}); <> };
        my @retries = $log =~ /^(.*"event":"order_retry".*"order":"$id".*)$/mg;
        is join("\n", map { /"bc_error_code":"([^"]*)"/ ? $1 : '?' }
                      @retries), 'Transport_Timeout',
            "$t: one retry, for the timeout"
            . ($case eq 'before' ? '; the refusal is read again at once'
                                 : '');
        sandbox_call('DELETE', '/_sandbox/faults');
    }
}

for my $run (1 .. $RUNS) {
    one_run($run, $SEED + $run - 1);
}

# the worker was never stopped but by us: still running
ok waitpid($worker->{pid}, WNOHANG) == 0, 'the last worker is still running';

done_testing();

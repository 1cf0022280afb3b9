# orders/updated and orders/cancelled, end to end: an edit reaches the
# open BC order (lines and total), a cancellation deletes it, an older
# delivery never overwrites a newer one, an update that comes before its
# create becomes the order, a cancellation before the create leaves BC
# empty, a released or posted order is a conflict for review.  Then the
# customer strategy "create", and an order whose BC total is beyond the
# tolerance (flagged, never accepted).  Each case uses the basic order
# (#1043 and its edits) under its own order id.

use strict;
use warnings;
use utf8;
use lib 't/lib';

use Test::More;
use ShopifyBC::Test;

binmode Test::More->builder->$_, ':encoding(UTF-8)'
    for qw(output failure_output todo_output);

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';
my $SHIPPING = '40400';

my $run = sprintf '%x%x', time, $$;
my $stream = "t:130:$run";

start_sandbox();
my $db = create_database('e2e_order_sync');
my $nginx = start_nginx(stream => $stream);
my $metrics_port = free_port();
my $worker = start_worker(database => $db, stream => $stream,
                          company => $COMPANY, shipping_account => $SHIPPING,
                          metrics_port => $metrics_port,
                          env => { BC365_CUSTOMER_STRATEGY => 'create',
                                   SKU_MAP_JSON => '{"TOKYO-BLUE":"1988-S"}' });

my %body = (create => fixture('orders-create-basic.json'),
            updated => fixture('orders-updated.json'),
            cancelled => fixture('orders-cancelled.json'));
my %topic = (create => 'orders/create', updated => 'orders/updated',
             cancelled => 'orders/cancelled', stale => 'orders/updated');

# an older edit than orders-updated.json: one chair less, earlier time
($body{stale} = $body{updated})
    =~ s/"updated_at":"2026-03-17T14:05:12-04:00"/"updated_at":"2026-03-17T10:00:00-04:00"/
    or die 'fixture changed';
$body{stale} =~ s/"current_quantity":3,/"current_quantity":2,/ or die;

my $base_id = 7300000000000 + ($$ % 1000) * 1000;
my $n = 0;

sub send_as {
    my ($id, $what) = @_;
    (my $b = $body{$what}) =~ s/^\{"id":\d+,/{"id":$id,/ or die;
    my $st = deliver($nginx, $b, 'X-Shopify-Topic' => $topic{$what},
                     'X-Shopify-Webhook-Id' => "$run-$id-$what-" . ++$n);
    is $st, 200, "order $id: $what delivered";
}

sub bc_orders_of {
    my ($id) = @_;
    return [ grep { $_->{order}{externalDocumentNumber} eq "SHOPIFY-$id" }
             @{ sandbox_orders() } ];
}

sub sync_row {
    my ($id) = @_;
    my ($r) = psql($db, "SELECT s.sync_state, s.totals_state,"
        . " coalesce(to_char(s.last_updated_at AT TIME ZONE 'UTC',"
        . " 'YYYY-MM-DD HH24:MI:SS'), ''), coalesce(s.conflict_code, ''),"
        . " l.state, coalesce(l.error_code, '')"
        . " FROM bc_order_ledger l LEFT JOIN bc_order_sync s"
        . " USING (shopify_order_id) WHERE l.shopify_order_id = $id");
    return $r || [];
}

sub lines_of {
    my ($o) = @_;
    return join ' ', map { "$_->{lineObjectNumber}x" . ($_->{quantity} + 0) }
        grep { $_->{lineType} ne 'Comment' } @{ $o->{salesOrderLines} };
}

sub worker_log {
    open my $fh, '<', $worker->{log} or return '';
    local $/;
    return scalar <$fh>;
}

# the dead-letter store: error code, message and reason of every record
sub dead_letters {
    return join "\n", map { join ' ', @$_ }
        psql($db, "SELECT error_code, error_message, reason"
                  . " FROM dead_letters ORDER BY id");
}

# --- 1. in order: create, edit, cancel --------------------------------
my $a = $base_id + 1;
send_as($a, 'create');
wait_until('order A created', 30, sub { @{ bc_orders_of($a) } == 1 });
my $a_id = bc_orders_of($a)->[0]{order}{id};
send_as($a, 'updated');
wait_until('order A edited', 30,
           sub { sync_row($a)->[2] eq '2026-03-17 18:05:12' });
my ($oa) = @{ bc_orders_of($a) };
is lines_of($oa->{order}), '1896-Sx1 1900-Sx3 40400x1',
    'A: desk 2 -> 1, chairs 4 -> 3 in the open BC order';
is sprintf('%.2f', $oa->{order}{totalAmountIncludingTax}), '1691.37',
    "A: BC's total = Shopify's current_total_price 1691.37";
is $oa->{order}{id}, $a_id, 'A: the same BC order, changed in place';

# an older edit arriving late changes nothing
send_as($a, 'stale');
wait_until('the stale edit seen', 30,
           sub { worker_log() =~ /"event":"order_update_stale"[^\n]*"order":"$a"/ });
($oa) = @{ bc_orders_of($a) };
is lines_of($oa->{order}), '1896-Sx1 1900-Sx3 40400x1',
    'A: an older edit does not overwrite the newer one';

send_as($a, 'cancelled');
wait_until('order A cancelled', 30, sub { sync_row($a)->[0] eq 'cancelled' });
is scalar @{ bc_orders_of($a) }, 0, 'A: cancelled: the open BC order is deleted';

# an edit older than the cancellation, late: still nothing
send_as($a, 'updated') for 1;
wait_until('late edit after cancel seen', 30, sub {
    () = worker_log() =~ /"event":"order_update_stale"[^\n]*"order":"$a"/g;
} );
is scalar @{ bc_orders_of($a) }, 0, 'A: a late edit does not bring it back';

# an orders/updated that changes nothing BC holds (Shopify sends one for
# every payment or tag change): one read, no write
{
    my $k = $base_id + 11;
    send_as($k, 'create');
    wait_until('order K created', 30, sub { @{ bc_orders_of($k) } == 1 });
    ($body{same} = $body{create})
        =~ s/"updated_at":"2026-03-16T10:12:33-04:00"/"updated_at":"2026-03-16T11:00:00-04:00"/
        or die 'fixture changed';
    $topic{same} = 'orders/updated';
    my $since = sandbox_call('GET', '/_sandbox/requests')->{last};
    send_as($k, 'same');
    wait_until('K: the no-change edit applied', 30,
               sub { sync_row($k)->[2] eq '2026-03-16 15:00:00' });
    my @calls = map { "$_->{method} " . ($_->{path} =~ m{/([^/]+)$})[0] }
        grep { $_->{path} =~ /salesOrders/ }
        @{ sandbox_call('GET', "/_sandbox/requests?since=$since")->{value} };
    is scalar(@calls), 1, 'K: an edit without changes costs one BC read'
        . " (@calls)";
    like $calls[0] // '', qr/^GET salesOrders\(/, 'K: the read of the order';
}

# --- 2. the edit before the create ------------------------------------
my $b = $base_id + 2;
send_as($b, 'updated');
wait_until('order B created from its edit', 30,
           sub { @{ bc_orders_of($b) } == 1 });
send_as($b, 'create');
wait_until('the late create seen', 30,
           sub { worker_log() =~ /"event":"order_duplicate"[^\n]*"order":"$b"/ });
my $ob = bc_orders_of($b);
is scalar @$ob, 1, 'B: one BC order';
is lines_of($ob->[0]{order}), '1896-Sx1 1900-Sx3 40400x1',
    'B: made from the newest state (the edit), not lost, not undone';
is sprintf('%.2f', $ob->[0]{order}{totalAmountIncludingTax}), '1691.37',
    'B: total 1691.37';

# --- 3. cancelled before the create -----------------------------------
my $c = $base_id + 3;
send_as($c, 'cancelled');
wait_until('order C cancellation recorded', 30,
           sub { sync_row($c)->[0] eq 'cancelled' });
send_as($c, 'create');
wait_until('the late create of C seen', 30, sub {
    worker_log() =~ /"event":"order_duplicate_failed"[^\n]*"order":"$c"/ });
is scalar @{ bc_orders_of($c) }, 0, 'C: no BC order';
is sync_row($c)->[5], 'Shopify_OrderCancelled', 'C: the ledger says why';

# --- 4. released, then edited: a conflict for review ------------------
my $d = $base_id + 4;
send_as($d, 'create');
wait_until('order D created', 30, sub { @{ bc_orders_of($d) } == 1 });
my ($od) = @{ bc_orders_of($d) };
sandbox_call('POST', "/_sandbox/companies/$COMPANY/salesOrders/"
             . "$od->{order}{id}/release");
send_as($d, 'updated');
wait_until('order D conflict', 30, sub { sync_row($d)->[0] eq 'conflict' });
is sync_row($d)->[3], 'Sync_Conflict', 'D: conflict recorded';
like dead_letters(), qr/Sync_Conflict.*released/s,
    'D: a dead-letter record for review names the reason';
($od) = @{ bc_orders_of($d) };
is lines_of($od->{order}), '1896-Sx2 1900-Sx4 40400x1',
    'D: the released BC order is not touched';

# --- 5. posted, then cancelled: a conflict ----------------------------
my $e = $base_id + 5;
send_as($e, 'create');
wait_until('order E created', 30, sub { @{ bc_orders_of($e) } == 1 });
my ($oe) = @{ bc_orders_of($e) };
sandbox_call('POST', "/_sandbox/companies/$COMPANY/salesOrders/"
             . "$oe->{order}{id}/post");
send_as($e, 'cancelled');
wait_until('order E conflict', 30, sub { sync_row($e)->[0] eq 'conflict' });
like dead_letters(), qr/no longer open \(salesInvoice/,
    'E: cancelling a posted order is a conflict naming the invoice';

# --- 5b. an edit while the create's outcome is unknown -----------------
{
    my $j = $base_id + 10;
    sandbox_faults({ method => 'POST', path_regex => '/salesOrders$',
                     times => 1, action => 'commit_then_fail',
                     status => 500 });
    send_as($j, 'create');
    wait_until('create of J in doubt', 30, sub {
        my ($r) = psql($db, "SELECT in_doubt FROM bc_order_ledger"
                            . " WHERE shopify_order_id = $j");
        $r && $r->[0] eq 't' });
    send_as($j, 'updated');
    wait_until('J edited', 30,
               sub { sync_row($j)->[2] eq '2026-03-17 18:05:12' });
    my $oj = bc_orders_of($j);
    is scalar @$oj, 1, 'J: one BC order (found by lookup, not posted again)';
    is lines_of($oj->[0]{order}), '1896-Sx1 1900-Sx3 40400x1',
        'J: the edit applied to the order found by lookup';
    is sprintf('%.2f', $oj->[0]{order}{totalAmountIncludingTax}), '1691.37',
        'J: total 1691.37';
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- 5c. an edit applied, its totals check cut short -------------------
# The edit's lines reach BC, then BC fails the read of the total (503):
# the retry finds the edit applied already and must still check the
# totals, not acknowledge it as a stale delivery.
{
    my $x = $base_id + 40;
    send_as($x, 'create');
    wait_until('order X created', 30, sub { @{ bc_orders_of($x) } == 1 });
    wait_until('order X totals checked', 30,
               sub { sync_row($x)->[1] ne 'pending' });
    my $x_id = bc_orders_of($x)->[0]{order}{id};
    my $read = "salesOrders\\($x_id\\)\\?";
    # the edit's first read of the order passes, the read after the line
    # changes fails once
    sandbox_faults({ method => 'GET', path_regex => $read, times => 1,
                     latency_ms => 1 },
                   { method => 'GET', path_regex => $read, times => 1,
                     status => 503, retry_after => 1 });
    send_as($x, 'updated');
    wait_until('order X edited', 30,
               sub { sync_row($x)->[2] eq '2026-03-17 18:05:12' });
    my $row = wait_until('order X totals checked after the retry', 30, sub {
        my $r = sync_row($x);
        $r->[1] ne 'pending' ? $r : undef;
    });
    is $row->[1], 'matched', 'X: the edit\'s totals checked on the retry';
    my ($ox) = @{ bc_orders_of($x) };
    is lines_of($ox->{order}), '1896-Sx1 1900-Sx3 40400x1', 'X: the edit applied once';
    is sprintf('%.2f', $ox->{order}{totalAmountIncludingTax}), '1691.37',
        "X: BC's total = Shopify's 1691.37";
    unlike worker_log(), qr/"event":"order_update_stale"[^\n]*"order":"$x"/,
        'X: the retry is not taken for a stale delivery';
    sandbox_call('DELETE', '/_sandbox/faults');
}

# --- 6. customer strategy create --------------------------------------
{
    my $u = fixture('orders-create-unicode.json');
    my ($f1, $f2) = ($base_id + 6, $base_id + 7);
    for my $id ($f1, $f2) {
        (my $body = $u) =~ s/^\{"id":\d+,/{"id":$id,/ or die;
        is deliver($nginx, $body, 'X-Shopify-Webhook-Id' => "$run-u-$id"), 200,
            "unicode order $id delivered";
    }
    wait_until('both unicode orders created', 30, sub {
        @{ bc_orders_of($f1) } == 1 && @{ bc_orders_of($f2) } == 1 });
    my $c1 = bc_orders_of($f1)->[0]{order};
    my $c2 = bc_orders_of($f2)->[0]{order};
    like $c1->{customerNumber}, qr/^C\d{5}$/,
        'a buyer BC does not know gets a new customer';
    is $c2->{customerNumber}, $c1->{customerNumber},
        'the same buyer again: the same customer, not a second one';
    my $q = sandbox_call('GET', '/_sandbox/requests')->{value};
    is scalar(grep { $_->{method} eq 'POST' && $_->{path} =~ /customers$/ }
              @$q), 1, 'one customer created';
    is $c1->{customerName}, 'Café Été Démo GmbH',
        "named after the Shopify customer's company";
}

# --- 7. beyond the tolerance: flagged, never accepted -----------------
{
    sandbox_call('POST', "/_sandbox/tax/$COMPANY", {
        areas => { 'ATLANTA, GA' => [{ jurisdiction => 'GA',
                    rates => { FURNITURE => 5, FREIGHT => 5,
                               SERVICES => 5 } }] } });
    my $g = $base_id + 8;
    send_as($g, 'create');
    wait_until('order G flagged', 30, sub { sync_row($g)->[1] eq 'mismatch' });
    like dead_letters(),
        qr/Mapping_TotalMismatch.*differs from Shopify's total 2932\.71 by -27\.73/s,
        'G: BC total 5 % tax, 27.73 off: dead-letter record Mapping_TotalMismatch';
    my ($og) = @{ bc_orders_of($g) };
    ok !grep({ $_->{lineObjectNumber} eq '40900' }
             @{ $og->{order}{salesOrderLines} }),
        'G: no variance line papers over it';
    my $m = HTTP::Tiny->new->get("http://127.0.0.1:$metrics_port/metrics");
    like $m->{content}, qr/bc_order_sync_total\{event="total_mismatch"\} 1/,
        'G: counted in bc_order_sync_total';
    like $m->{content}, qr/bc_order_sync_total\{event="cancelled"\} 2/,
        'cancellations counted';
}

# --- 8. the SKU map table: seeded from SKU_MAP_JSON, a person's row wins
{
    my ($row) = psql($db, "SELECT bc_item_number, source FROM bc_sku_map"
                          . " WHERE sku = 'TOKYO-BLUE'");
    is "@$row", '1988-S SKU_MAP_JSON', 'SKU_MAP_JSON seeds bc_sku_map';
    psql($db, "UPDATE bc_sku_map SET bc_item_number = '1964-S',"
              . " source = 'manual' WHERE sku = 'TOKYO-BLUE'");
    stop_worker($worker);
    $worker = start_worker(database => $db, stream => $stream,
        company => $COMPANY, shipping_account => $SHIPPING,
        env => { SKU_MAP_JSON => '{"TOKYO-BLUE":"1988-S"}' });
    ($row) = psql($db, "SELECT bc_item_number FROM bc_sku_map"
                       . " WHERE sku = 'TOKYO-BLUE'");
    is $row->[0], '1964-S', 'a restart with the setting keeps the edited row';
    my $h = $base_id + 9;
    (my $pos = fixture('orders-create-guest-pos.json'))
        =~ s/^\{"id":\d+,/{"id":$h,/ or die;
    $pos =~ s/"sku":"1964-S"/"sku":"TOKYO-BLUE"/ or die 'fixture changed';
    is deliver($nginx, $pos, 'X-Shopify-Webhook-Id' => "$run-pos-$h"), 200,
        'POS order with a shop-only SKU delivered';
    wait_until('order H created', 30, sub { @{ bc_orders_of($h) } == 1 });
    is lines_of(bc_orders_of($h)->[0]{order}), '1928-Sx2 1964-Sx1',
        'the SKU is booked as the item the table names';
}

# --- 9. presentment money, and Shopify's tax as lines -------------------
{
    my $stream2 = "$stream:b";
    my $db2 = create_database('e2e_order_sync_b');
    my $nginx2 = start_nginx(stream => $stream2);
    my $w2 = start_worker(database => $db2, stream => $stream2,
        company => $COMPANY, shipping_account => $SHIPPING, name => 'w2',
        env => { BC365_ORDER_MONEY => 'presentment',
                 BC365_TAX_POLICY => 'line', BC365_TAX_ACCOUNT => '22500' });
    for my $name ('orders-create-multicurrency.json',
                  'orders-create-discounts.json') {
        my $h = fixture_headers($name);
        is deliver($nginx2, fixture($name),
                   map { $_ => $h->{$_} } grep { /^X-Shopify-(?!Hmac)/ }
                   keys %$h), 200, "$name delivered to the second worker";
    }
    my %by;
    wait_until('both orders in BC', 30, sub {
        %by = map { $_->{order}{externalDocumentNumber} => $_ }
              @{ sandbox_orders() };
        $by{'SHOPIFY-6021450022001'} && $by{'SHOPIFY-6021450011002'};
    });
    my $mc = $by{'SHOPIFY-6021450022001'};
    is $mc->{companyId}, 'a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6',
        'presentment: the EUR shop still books in its company';
    is $mc->{order}{currencyCode}, 'USD', 'presentment: in the currency paid';
    is sprintf('%.2f', $mc->{order}{totalAmountIncludingTax}), '1873.83',
        "presentment: BC's total = Shopify's presentment total 1873.83"
        . ' (not 1731.00 converted)';
    my $dc = $by{'SHOPIFY-6021450011002'}{order};
    is sprintf('%.2f', $dc->{totalAmountIncludingTax}), '1227.47',
        "tax as lines: BC's total = Shopify's 1227.47, no variance needed";
    is sprintf('%.2f', $dc->{totalTaxAmount}), '0.00',
        'tax as lines: BC adds no tax of its own';
    is join(',', map { "$_->{description}=" . sprintf('%.2f', $_->{unitPrice}) }
                 grep { $_->{lineObjectNumber} eq '22500' }
                 @{ $dc->{salesOrderLines} }),
        'GA State Tax=46.32,Cobb County Tax=23.17',
        "tax as lines: Shopify's tax lines on the tax account";
    stop_worker($w2);
}

is redis('XPENDING', $stream, 'bc-sync') =~ /^0/ ? 0 : 1, 0,
    'every stream entry acknowledged';

done_testing();

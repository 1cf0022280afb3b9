# Exactly once under duplicates, uncertain outcomes, a worker killed at
# the worst moment, and BC throttling: each Shopify order ends as one BC
# sales order.  Each case uses the basic order under its own order id.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
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
my $worker = start_worker(%wopt);

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

# End to end: signed Shopify orders/create deliveries enter nginx, the
# worker turns each into exactly one BC sales order in the sandbox, in
# the shop's company and currency, with the customer (found by e-mail),
# the item and G/L lines and the amount of fixtures/expected; BC computes
# the tax, and its totalAmountIncludingTax ends equal to Shopify's
# total_price to the cent (a rounding-variance line where BC's per-
# jurisdiction rounding differs).

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use ShopifyBC::Test;

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';   # CRONUS USA, Inc.
my $EUR_COMPANY = 'a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6';  # CRONUS DE
my $ROUNDING = '40900';                                  # rounding account
my $SHIPPING = '40400';                                  # freight income
my %ACCOUNT = (shipping => $SHIPPING,
               tip => '22300',                            # tips payable
               gift_card_sold => '22150',                 # gift card liability
               custom_line => '40250');                   # service income

my $run = sprintf '%x%x', time, $$;
my $stream = "t:100:$run";

start_sandbox();
my $db = create_database('e2e_orders');
my $nginx = start_nginx(stream => $stream);
my $worker = start_worker(database => $db, stream => $stream,
                          company => $COMPANY, shipping_account => $SHIPPING,
    env => {
        BC365_TIP_ACCOUNT => $ACCOUNT{tip},
        BC365_GIFT_CARD_ACCOUNT => $ACCOUNT{gift_card_sold},
        BC365_CUSTOM_LINE_ACCOUNT => $ACCOUNT{custom_line},
    });

my %compare = map { $_ => 1 } qw(
    orders-create-basic.json orders-create-discounts.json
    orders-create-unicode.json orders-create-guest-pos.json
    orders-create-large.json orders-create-no-sku.json);
my @fixtures = (sort(keys %compare), 'orders-create-long-name.json',
                'orders-create-multicurrency.json');

my %order_id;
for my $name (@fixtures) {
    my $body = fixture($name);
    my $h = fixture_headers($name);
    ($order_id{$name}) = $body =~ /^\{"id":(\d+),/;
    my $status = deliver($nginx, $body,
        map { $_ => $h->{$_} } grep { /^X-Shopify-(?!Hmac)/ } keys %$h);
    is $status, 200, "$name delivered";
}

my $ids = join ',', values %order_id;
my %ledger;
wait_until('an outcome for every order', 90, sub {
    %ledger = map { $_->[0] => $_ } psql($db,
        "SELECT shopify_order_id, state, coalesce(bc_id, ''),"
        . " coalesce(bc_number, ''), external_document_number,"
        . " coalesce(error_code, ''), coalesce(error_message, ''), attempts"
        . " FROM bc_order_ledger WHERE shopify_order_id IN ($ids)");
    8 == grep { $_->[1] eq 'created' || $_->[1] eq 'failed' } values %ledger;
});

my @bc = @{ sandbox_orders() };
my %by_ext;
push @{ $by_ext{ $_->{order}{externalDocumentNumber} } }, $_ for @bc;

sub money { sprintf '%.2f', $_[0] }

for my $name (@fixtures) {
    my $row = $ledger{ $order_id{$name} };
    is $row->[1], 'created', "$name: ledger says created";
    my $ext = $row->[4];
    ok length($ext) <= 35 && $ext eq uc($ext) && $ext !~ /^\s|\s$/,
        "$name: externalDocumentNumber '$ext' is a valid Code[35]";
    like $ext, qr/$order_id{$name}/, "$name: built from the order id";
    my $copies = $by_ext{$ext} || [];
    is scalar(@$copies), 1, "$name: exactly one BC order";
    next unless @$copies == 1;
    my $order = $copies->[0]{order};
    is $order->{id}, $row->[2], "$name: ledger holds the BC id";
    is $order->{number}, $row->[3], "$name: ledger holds the BC number";

    my $exp = expected($name);
    my $shopify = json()->decode(fixture($name));
    is $copies->[0]{companyId},
        $exp->{currencyCode} eq 'EUR' ? $EUR_COMPANY : $COMPANY,
        "$name: in the company of its shop";
    is $order->{currencyCode}, $exp->{currencyCode}, "$name: currency";
    is money($order->{totalAmountIncludingTax}), $shopify->{total_price},
        "$name: BC's totalAmountIncludingTax = Shopify's total_price"
        . " $shopify->{total_price}";
    is money($order->{totalAmountIncludingTax}), $exp->{amountIncludingTax},
        "$name: = the fixtures' amount including tax";
    my @variance = grep { $_->{lineType} eq 'Account'
                          && $_->{lineObjectNumber} eq $ROUNDING }
                   @{ $order->{salesOrderLines} };
    is money(@variance ? $variance[0]{unitPrice} : 0),
        money($exp->{taxRoundingVariance} // 0),
        "$name: rounding variance " . money($exp->{taxRoundingVariance} // 0);
    is money($order->{totalTaxAmount} + (@variance ? $variance[0]{unitPrice}
                                                   : 0)),
        $exp->{taxAmount}, "$name: BC's tax (+ variance) = Shopify's tax";
    next unless $compare{$name};
    my @want = map {
        [ $_->{lineType}, $_->{lineType} eq 'Account' ? $ACCOUNT{ $_->{role} }
                                                      : $_->{lineObjectNumber},
          $_->{quantity} + 0, money($_->{unitPrice}),
          money($_->{discountAmount}) ]
    } @{ $exp->{lines} };
    my @got = map {
        [ $_->{lineType}, $_->{lineObjectNumber}, $_->{quantity} + 0,
          money($_->{unitPrice}), money($_->{discountAmount}) ]
    } grep { $_->{lineType} ne 'Comment'
             && $_->{lineObjectNumber} ne $ROUNDING }
      @{ $order->{salesOrderLines} };
    is_deeply \@got, \@want,
        "$name: item and G/L lines as expected (" . @want . ')';
    is money($order->{totalAmountExcludingTax} - money(@variance
        ? $variance[0]{unitPrice} : 0)), $exp->{amountExcludingTax},
        "$name: amount excluding tax $exp->{amountExcludingTax}";
    is $order->{customerNumber}, $exp->{customerNumber},
        "$name: customer $exp->{customerNumber} (matched by e-mail)";
}

# impossible amounts are refused, never booked
{
    my $basic = fixture('orders-create-basic.json');
    my $id = 7100000000000 + ($$ % 1000) * 1000;
    my %bad = (
        'negative price' => sub { s/"price":"1000.80"/"price":"-1000.80"/ },
        'huge quantity' =>
            sub { s/"quantity":2,/"quantity":9223372036854775807,/ },
    );
    my %case;
    for my $what (sort keys %bad) {
        (my $body = $basic) =~ s/^\{"id":\d+,/{"id":${\ ++$id},/ or die;
        local $_ = $body;
        $bad{$what}->() or die "fixture changed: $what";
        $case{$what} = $id;
        is deliver($nginx, $_, 'X-Shopify-Webhook-Id' => "$run-$id"), 200,
            "$what: delivered";
    }
    my $list = join ',', values %case;
    my %row;
    wait_until('the impossible orders settled', 60, sub {
        %row = map { $_->[0] => $_ } psql($db,
            "SELECT shopify_order_id, state, coalesce(error_code, ''),"
            . " coalesce(error_message, '') FROM bc_order_ledger"
            . " WHERE shopify_order_id IN ($list) AND state <> 'new'"
            . " AND state <> 'attempting'");
        keys %row == keys %case;
    });
    my %orders = map { $_->{order}{externalDocumentNumber} => 1 }
                 @{ sandbox_orders() };
    for my $what (sort keys %case) {
        my $row = $row{ $case{$what} };
        is "$row->[1]/$row->[2]", 'failed/Mapping_InvalidOrder',
            "$what: refused by the mapping";
        like $row->[3], qr/^line 1 "ATHENS Desk"/,
            "$what: the reason names the line: $row->[3]";
        ok !$orders{"SHOPIFY-$case{$what}"}, "$what: no BC order";
    }
}

is scalar(@bc), scalar(grep { $_->[1] eq 'created' } values %ledger),
    'BC holds no order the ledger does not know';

# the first POST of a never-tried order needs no look-up first; only the
# two orders with a rounding variance cost more: the line, and one read
# of the total after it
my @calls = @{ sandbox_call('GET', '/_sandbox/requests')->{value} };
my @lookups = grep { $_->{method} eq 'GET' && $_->{path} =~ /sales/
                     && $_->{query} =~ /filter/ } @calls;
is scalar(@lookups), 0, 'no BC look-ups on the happy path';
is scalar(grep { $_->{method} eq 'POST' && $_->{path} =~ /salesOrderLines$/ }
          @calls), 2, 'one variance line each for the two orders that need it';
is scalar(grep { $_->{method} eq 'GET' && $_->{path} =~ /salesOrders\(/ }
          @calls), 2, 'and one read of the total after it';

# one customer look-up per e-mail: the impossible orders reuse the basic
# order's address, which was cached, and the guest order has none
my @customer_gets = grep { $_->{method} eq 'GET' && $_->{path} =~ /customers/ }
                    @{ sandbox_call('GET', '/_sandbox/requests')->{value} };
is scalar(@customer_gets), 7,
    'customer look-ups: one per distinct e-mail of the posted orders';

is redis('XPENDING', $stream, 'bc-sync') =~ /^0/ ? 0 : 1, 0,
    'every stream entry acknowledged';

done_testing();

# The Shopify app's life, worker side, against the sandbox over HTTPS
# (test CA): an install entry (as nginx writes it after OAuth) becomes a
# shops row with encrypted tokens and the shop's webhook subscriptions,
# through a THROTTLED answer; the webhooks CLI; a refresh whose answer is
# lost, then retried with the same refresh token, and the rotation;
# client-credentials shops; app/uninstalled stops every Shopify call
# while orders still reach BC; customers/data_request, customers/redact,
# shop/redact and the retention purge, checked in PostgreSQL and Redis.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use URI;
use Time::HiRes qw(time sleep);
use ShopifyBC::Test;

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';
my $APP = 'e2e-shopify-app';
my $SECRET = 'e2e-shopify-app-secret';
my $KEY = '6a' x 32;
my $CALLBACK = 'https://connector.example.com/webhooks/shopify';
my $A = 'acme-demo.myshopify.com';        # the fixtures' shop
my $B = 'rotating-shop.myshopify.com';
my $C = 'own-store.myshopify.com';        # client credentials
my $BIN = top() . '/worker/build/shopify-bc-worker';

my $run = sprintf '%x%x', time, $$;
my $stream = "t:130:$run";

my $sb = start_sandbox(https => 1, 'shopify-app' => "$APP:$SECRET:read_orders");
my $hp = $sb->{https_port};
my $db = create_database('e2e_shops');

# --- helpers ---------------------------------------------------------------

sub shop_req {
    my ($method, $shop, $path, $body) = @_;
    my @cmd = ('curl', '-sS', '--cacert', $sb->{ca},
               '--resolve', "$shop:$hp:127.0.0.1", '-X', $method,
               '-o', '-', '-D', '-', '--max-time', 10);
    push @cmd, '-H', 'Content-Type: application/x-www-form-urlencoded',
               '--data-binary', $body if defined $body;
    push @cmd, "https://$shop:$hp$path";
    open my $fh, '-|', @cmd or die "curl: $!";
    my $out = do { local $/; <$fh> };
    close $fh;
    my ($head, $b) = split /\r\n\r\n/, $out, 2;
    my ($status) = $head =~ m{^HTTP/\S+ (\d+)};
    my ($loc) = $head =~ m{^location:\s*(\S+)}mi;
    return { status => $status // 0, location => $loc, body => $b // '' };
}

sub form {
    my (%f) = @_;
    my $u = URI->new('http:');
    $u->query_form(map { ($_ => $f{$_}) } sort keys %f);
    return $u->query;
}

# an expiring offline token pair, the way nginx gets one
sub oauth_tokens {
    my ($shop) = @_;
    my $r = shop_req('GET', $shop, '/admin/oauth/authorize?' . form(
        client_id => $APP, scope => 'read_orders',
        redirect_uri => 'https://app.example/oauth/callback', state => 's'));
    my %q = URI->new($r->{location})->query_form;
    my $t = shop_req('POST', $shop, '/admin/oauth/access_token', form(
        client_id => $APP, client_secret => $SECRET, code => $q{code},
        expiring => 1));
    die "token exchange: $t->{status} $t->{body}" unless $t->{status} == 200;
    return json()->decode($t->{body});
}

sub refresh_call {
    my ($shop, $rt) = @_;
    my $t = shop_req('POST', $shop, '/admin/oauth/access_token', form(
        grant_type => 'refresh_token', client_id => $APP,
        client_secret => $SECRET, refresh_token => $rt));
    return $t->{status};
}

sub encrypt {
    my ($shop, $token) = @_;
    open my $fh, '-|', "echo '$token' | SHOPIFY_TOKEN_KEY=$KEY $BIN tokens"
                       . " encrypt --shop $shop" or die $!;
    my $blob = <$fh>;
    close $fh;
    chomp $blob;
    return $blob;
}

my $wid = 0;
sub xadd {
    my ($topic, $shop, $body, %f) = @_;
    $wid++;
    return redis('XADD', $f{stream} // $stream, $f{id} // '*',
                 topic => $topic, shop => $shop,
                 webhook_id => $f{webhook_id} // "wh-$run-$wid",
                 api_version => '2025-10',
                 triggered_at => $f{triggered_at} // '',
                 event_id => '', received_at => int(time * 1000),
                 body => $body);
}

sub install_entry {
    my ($shop, $tok, %o) = @_;
    my %b = (shop => $shop, scope => 'read_orders',
             requested_scope => 'read_orders',
             access_token => $o{access_blob} // encrypt($shop, $tok->{access_token}),
             obtained_at => $o{obtained_at} // int(time * 1000));
    if ($tok->{refresh_token}) {
        $b{expires_in} = $o{expires_in} // $tok->{expires_in};
        $b{refresh_token} = encrypt($shop, $tok->{refresh_token});
        $b{refresh_token_expires_in} = $tok->{refresh_token_expires_in};
    }
    return xadd('shopify/installed', $shop, json()->encode(\%b),
                webhook_id => 'install-' . ($o{hex} // sprintf('%x', ++$wid)));
}

sub row {
    my ($sql) = @_;
    my @r = psql($db, $sql);
    return $r[0];
}

sub shop_row {
    my ($shop) = @_;
    return row("SELECT status, mode, scopes, coalesce(access_token, ''),"
        . " coalesce(refresh_token, ''), webhooks_synced_at IS NOT NULL,"
        . " token_failures, uninstalled_at IS NOT NULL,"
        . " webhooks_due_at IS NULL FROM shops WHERE domain = '$shop'");
}

sub subs_of {
    my ($shop) = @_;
    my $v = sandbox_call('GET', "/_sandbox/shopify/admin/webhooks?shop=$shop")
            ->{value};
    return [ sort map { "$_->{topic} $_->{uri}" } @$v ];
}

sub shop_log {
    my ($shop) = @_;
    return [ grep { ($_->{shop} // '') eq $shop }
             @{ shopify_requests()->{value} } ];
}

sub audit {
    my ($shop, $action) = @_;
    return row("SELECT count(*), coalesce(max(detail::text), '')"
               . " FROM shop_audit WHERE shop = '$shop'"
               . " AND action = '$action'");
}

# --- install, THROTTLED, stale subscriptions -------------------------------

my $tokA = oauth_tokens($A);
sandbox_call('POST', '/_sandbox/shopify/admin/webhooks',
             { shop => $A, topic => 'PRODUCTS_UPDATE', uri => $CALLBACK });
sandbox_call('POST', '/_sandbox/shopify/admin/webhooks',
             { shop => $A, topic => 'ORDERS_CREATE',
               uri => 'https://old.example.com/hooks' });
# the first list query (cost 52) does not fit: THROTTLED, then a wait
sandbox_call('POST', '/_sandbox/shopify/admin/bucket',
             { shop => $A, available => 10, restore_rate => 60 });

my %env = (
    SHOPIFY_CLIENT_ID => $APP,
    SHOPIFY_CLIENT_SECRET => $SECRET,
    SHOPIFY_TOKEN_KEY => $KEY,
    SHOPIFY_WEBHOOK_CALLBACK_URL => $CALLBACK,
    SHOPIFY_API_VERSION => '2025-10',
    SHOPIFY_CONNECT_TO => "127.0.0.1:$hp",
    SHOPIFY_CA_FILE => $sb->{ca},
    SHOPIFY_MAINTENANCE_INTERVAL_MS => 200,
    SHOPIFY_CLIENT_CREDENTIALS_SHOPS => $C,
    PURGE_INTERVAL_MS => 300,
    PAYLOAD_RETENTION_DAYS => 30,
    WORKER_CONCURRENCY => 2,
);
my %wopt = (database => $db, stream => $stream, company => $COMPANY,
            shipping_account => '40400', name => 'shops-worker',
            env => \%env);
my $worker = start_worker(%wopt);

install_entry($A, $tokA);

wait_until('shop A registered', 30, sub { ((shop_row($A) // [])->[5] // '') eq 't' });
my $r = shop_row($A);
is $r->[0], 'active', 'A: active';
is $r->[1], 'oauth', 'A: oauth mode';
is $r->[2], 'read_orders', 'A: granted scopes recorded';
like $r->[3], qr/^v1\.[A-Za-z0-9+\/]+=*$/, 'A: access token stored as a v1 blob';
unlike $r->[3], qr/\Q$tokA->{access_token}\E/, 'A: not in clear';
unlike $r->[4], qr/\Q$tokA->{refresh_token}\E/, 'A: refresh token not in clear';
my ($plain) = psql($db, "SELECT count(*) FROM shops WHERE access_token LIKE"
                        . " '%$tokA->{access_token}%' OR refresh_token LIKE"
                        . " '%$tokA->{refresh_token}%'");
is $plain->[0], 0, 'no token in clear anywhere in the table';
is_deeply subs_of($A), ["APP_UNINSTALLED $CALLBACK", "ORDERS_CREATE $CALLBACK"],
    'A: exactly the configured topics at the callback URL (stale ones gone)';
my @thr = grep { $_->{throttled} } @{ shop_log($A) };
ok @thr >= 1, 'A: a THROTTLED answer came';
my $wlog = do { local (@ARGV, $/) = $worker->{log}; <> };
like $wlog, qr/"event":"shopify_throttle_wait"[^\n]*"shop":"$A"/,
    'A: the worker waited as the restore rate says';
unlike $wlog, qr/\Q$tokA->{access_token}\E|\Q$tokA->{refresh_token}\E|$SECRET/,
    'no token or secret in the worker log';
is audit($A, 'installed')->[0], 1, 'A: audit row "installed"';

# the same install again, and an older one: nothing changes
my $blob_before = shop_row($A)->[3];
install_entry($A, $tokA, obtained_at => int(time * 1000) - 3600_000);
wait_until('older install seen', 15, sub { audit($A, 'install_ignored')->[0] >= 1 });
is shop_row($A)->[3], $blob_before, 'A: an older install does not overwrite';

# --- CLI ------------------------------------------------------------------

sub cli_ensure {
    my ($shop) = @_;
    my %e = worker_env(%wopt);
    local @ENV{keys %e} = values %e;
    my $out = `$BIN webhooks ensure --shop $shop 2>/dev/null`;
    return ($? >> 8, $out =~ /^\{/ ? json()->decode($out) : undef);
}

my ($rc, $rep) = cli_ensure($A);
is $rc, 0, 'CLI: webhooks ensure exits 0';
is $rep->{kept}, 2, 'CLI: nothing to do: both kept';
sandbox_call('POST', '/_sandbox/shopify/admin/webhooks',
             { shop => $A, topic => 'ORDERS_PAID', uri => $CALLBACK });
sandbox_call('DELETE', "/_sandbox/shopify/admin/webhooks?shop=$A");
sandbox_call('POST', '/_sandbox/shopify/admin/webhooks',
             { shop => $A, topic => 'ORDERS_PAID', uri => $CALLBACK });
($rc, $rep) = cli_ensure($A);
is_deeply [$rc, [sort @{ $rep->{created} }], scalar @{ $rep->{deleted} }],
    [0, ['APP_UNINSTALLED', 'ORDERS_CREATE'], 1],
    'CLI: missing ones created, the stale one deleted';
is_deeply subs_of($A), ["APP_UNINSTALLED $CALLBACK", "ORDERS_CREATE $CALLBACK"],
    'CLI: the shop matches the settings again';

# --- refresh: the first answer is lost -------------------------------------

my $tokB = oauth_tokens($B);
sandbox_call('POST', '/_sandbox/shopify/admin/faults',
             [{ path => '^/admin/oauth/access_token$', shop => $B,
                kind => 'drop', times => 1 }]);
# expires within the refresh margin (5 minutes): refreshed at once
install_entry($B, $tokB, expires_in => 60);

wait_until('shop B refreshed and registered', 30,
           sub { my $x = shop_row($B); $x && $x->[5] eq 't' });
my @grants = grep { ($_->{grant} // '') eq 'refresh_token' } @{ shop_log($B) };
# the dropped one is not in the request log (it has no answer); the
# worker's log has the failure
like do { local (@ARGV, $/) = $worker->{log}; <> },
    qr/"event":"shop_token_failed"[^\n]*"shop":"$B"/, 'B: the lost answer was a failure';
is scalar @grants, 1, 'B: one answered refresh, after the lost one';
$r = shop_row($B);
is $r->[6], 0, 'B: failures reset';
isnt $r->[4], '', 'B: a refresh token is stored';
is refresh_call($B, $tokB->{refresh_token}), 400,
    'B: the install refresh token is dead: the worker moved to the rotated pair';
is_deeply subs_of($B), ["APP_UNINSTALLED $CALLBACK", "ORDERS_CREATE $CALLBACK"],
    'B: registered with the refreshed token';
is audit($B, 'reauth_required')->[0], 0, 'B: no reauth needed';

# a blob under another key: dead-lettered, not stored
{
    my %bad = (shop => $B, scope => 'read_orders', obtained_at => int(time * 1000),
               access_token => 'v1.' . ('QUFB' x 12));
    xadd('shopify/installed', $B, json()->encode(\%bad));
    wait_until('undecryptable install dead-lettered', 15, sub {
        row("SELECT count(*) FROM dead_letters WHERE shop = '$B'"
            . " AND error_code = 'Shops_TokenUndecryptable'"
            . " AND reason = 'shopify_install'")->[0] == 1 });
    is shop_row($B)->[4], $r->[4], 'B: row untouched by the bad install';
}

# --- client credentials -----------------------------------------------------

wait_until('own store registered', 30,
           sub { my $x = shop_row($C); $x && $x->[5] eq 't' });
$r = shop_row($C);
is_deeply [@$r[0, 1]], ['active', 'client_credentials'], 'C: client-credentials shop';
like $r->[3], qr/^v1\./, 'C: its token encrypted';
is_deeply subs_of($C), ["APP_UNINSTALLED $CALLBACK", "ORDERS_CREATE $CALLBACK"],
    'C: registered';

# --- uninstall ---------------------------------------------------------------

my $basic = fixture('orders-create-basic.json');
my $unicode = fixture('orders-create-unicode.json');
# the shop header is not signed: a signed body of another shop uninstalls
# nothing
(my $other = fixture('app-uninstalled.json'))
    =~ s/"myshopify_domain":\s*"acme-demo\.myshopify\.com"/"myshopify_domain":"other.myshopify.com"/
    or die 'fixture changed';
xadd('app/uninstalled', $A, $other, triggered_at => '2099-01-01T00:00:00Z');
wait_until('the foreign uninstall dead-lettered', 15, sub {
    row("SELECT count(*) FROM dead_letters WHERE shop = '$A'"
        . " AND topic = 'app/uninstalled'"
        . " AND error_code = 'Shops_InvalidEntry'")->[0] == 1 });
is shop_row($A)->[0], 'active', 'A: an uninstall whose body names another shop changes nothing';

xadd('app/uninstalled', $A, fixture('app-uninstalled.json'),
     triggered_at => '2099-01-01T00:00:00Z');
wait_until('A uninstalled', 15, sub { shop_row($A)->[0] eq 'uninstalled' });
$r = shop_row($A);
is_deeply [@$r[3, 4, 7]], ['', '', 't'], 'A: tokens dropped, uninstalled_at set';
is audit($A, 'uninstalled')->[0], 1, 'A: audit row "uninstalled"';

my $before = scalar @{ shop_log($A) };
psql($db, "UPDATE shops SET webhooks_due_at = now() WHERE domain = '$A'");
($rc, $rep) = cli_ensure($A);
is_deeply [$rc, $rep->{result}], [1, 'not_active'], 'A: CLI refuses an uninstalled shop';
sleep 1;    # five maintenance passes
is scalar @{ shop_log($A) }, $before, 'A: no Shopify call after the uninstall';

# an install older than the uninstall stays ignored
install_entry($A, $tokA);
wait_until('stale install seen', 15, sub { audit($A, 'install_ignored')->[0] >= 2 });
is shop_row($A)->[0], 'uninstalled', 'A: an install from before the uninstall is ignored';

# orders of the shop still reach BC
xadd('orders/create', $A, $basic);
xadd('orders/create', $A, $unicode);
wait_until('orders created', 60, sub {
    row("SELECT count(*) FROM bc_order_ledger WHERE shop = '$A' AND state = 'created'")->[0] == 2 });
pass 'A: orders received after the uninstall still became BC orders';

# --- privacy ---------------------------------------------------------------

# customers/data_request for the basic order's customer
my $dr = fixture('customers-data_request.json');
psql($db, "INSERT INTO dead_letters (shop, topic, reason, payload) VALUES"
          . " ('$A', 'orders/create', 'bc_rejected',"
          . " '{\"id\":6021450011001,\"note\":\"x\"}')");
xadd('customers/data_request', $A, $dr);
wait_until('export recorded', 15, sub {
    row("SELECT count(*) FROM privacy_requests WHERE shop = '$A'")->[0] == 1 });
my $export = json()->decode(row("SELECT export FROM privacy_requests WHERE shop = '$A'")->[0]);
is_deeply [map { $_->{shopify_order_id} } @{ $export->{ledger} }], [6021450011001],
    'data_request: the ledger row of the order';
is_deeply [map { $_->{payload}{id} } grep { $_->{topic} eq 'orders/create' }
           @{ $export->{stream_entries} }], [6021450011001],
    'data_request: the stream entry of the order, with its payload';
is scalar @{ $export->{dead_letters} }, 1, 'data_request: the dead letter';
is_deeply [map { "$_->{shopify_order_id} $_->{totals_state}" } @{ $export->{order_sync} || [] }],
    ['6021450011001 matched'],
    'data_request: the order sync row (totals, states, conflict text)';
is audit($A, 'customers_data_request')->[0], 1, 'data_request: audit row';

# customers/redact for the unicode order's customer
my $rd = fixture('customers-redact.json');
psql($db, "UPDATE bc_order_ledger SET error_message = 'juergen.groesse\@example.com'"
          . " WHERE shopify_order_id = 6021450011004");
# the order sync state (a conflict's reason can quote BC's message), and
# a ledger row the version 2 migration archived
is row("SELECT count(*) FROM bc_order_sync WHERE shopify_order_id IN"
       . " (6021450011001, 6021450011004)")->[0], 2,
    'the two orders have their order sync rows';
psql($db, "UPDATE bc_order_sync SET conflict_message = 'Customer Jürgen Größe is blocked'"
          . " WHERE shopify_order_id IN (6021450011001, 6021450011004)");
psql($db, "CREATE TABLE IF NOT EXISTS bc_order_ledger_v1_duplicates"
          . " (LIKE bc_order_ledger, archived_at timestamptz NOT NULL DEFAULT now())");
psql($db, "INSERT INTO bc_order_ledger_v1_duplicates SELECT *, now() FROM bc_order_ledger"
          . " WHERE shopify_order_id IN (6021450011001, 6021450011004)");
psql($db, "INSERT INTO bc_duplicate_checks (shopify_order_id, copies)"
          . " VALUES (6021450011001, 1), (6021450011004, 1)");
psql($db, "INSERT INTO dead_letters (shop, topic, reason, payload) VALUES"
          . " ('$A', 'orders/create', 'bc_rejected', '{\"id\":6021450011004}'),"
          . " ('$A', 'orders/create', 'bc_rejected',"
          . " 'eyJpZCI6NjAyMTQ1MDAxMTAwNH0=')");
psql($db, "UPDATE dead_letters SET shopify_order_id = 6021450011004"
          . " WHERE payload LIKE 'eyJ%'");
xadd('customers/redact', $A, $rd);
wait_until('redacted', 15, sub { audit($A, 'customers_redact')->[0] == 1 });
my $entries = redis('XRANGE', $stream, '-', '+');
unlike $entries, qr/"id":6021450011004/, 'redact: no stream entry of the order';
like $entries, qr/"id":6021450011001/, 'redact: the other customer\'s order stays';
is row("SELECT count(*) FROM bc_order_ledger WHERE shopify_order_id = 6021450011004"
       . " AND error_message IS NOT NULL")->[0], 0, 'redact: ledger text cleared';
is row("SELECT count(*) FROM dead_letters WHERE payload LIKE '%6021450011004%'"
       . " OR shopify_order_id = 6021450011004")->[0], 0,
    'redact: dead_letters rows gone (by payload, and by order id)';
is row("SELECT count(*) FROM dead_letters WHERE shop = '$A'"
       . " AND topic = 'orders/create'")->[0], 1,
    'redact: the other dead letter stays';
is row("SELECT count(*) FROM bc_order_sync WHERE shopify_order_id = 6021450011004"
       . " AND conflict_message IS NOT NULL")->[0], 0, 'redact: order sync text cleared';
is row("SELECT count(*) FROM bc_order_sync WHERE shopify_order_id = 6021450011001"
       . " AND conflict_message IS NOT NULL")->[0], 1,
    'redact: the other order\'s sync text stays';
is row("SELECT count(*) FROM bc_order_ledger_v1_duplicates WHERE shopify_order_id"
       . " = 6021450011004 AND error_message IS NOT NULL")->[0], 0,
    'redact: archived ledger text cleared';
like audit($A, 'customers_redact')->[1], qr/"stream_entries": 1\b/,
    'redact: the audit row counts the entries, holds no e-mail';
unlike audit($A, 'customers_redact')->[1], qr/example\.com/, 'redact: audit without personal data';

# an entry of that customer that some consumer group has not finished
# (here another group that lags behind) may still have to reach BC:
# redact keeps it, and says so
my $last = (split /\n/, redis('XREVRANGE', $stream, '+', '-', 'COUNT', 1))[0];
redis('XGROUP', 'CREATE', $stream, 'laggard', $last);
my $waiting = xadd('orders/create', $A, $unicode);
xadd('customers/redact', $A, $rd);
wait_until('second redact', 15, sub { audit($A, 'customers_redact')->[0] == 2 });
like redis('XRANGE', $stream, $waiting, $waiting), qr/"id":6021450011004/,
    'redact: an entry not yet finished by every consumer group is kept';
like row("SELECT detail::text FROM shop_audit WHERE shop = '$A' AND"
         . " action = 'customers_redact' ORDER BY id DESC LIMIT 1")->[0],
    qr/"stream_entries_kept": 1\b/, 'redact: the audit row counts the kept entry';
redis('XGROUP', 'DESTROY', $stream, 'laggard');
redis('XDEL', $stream, $waiting);

# the retention purge: an old export, an old resolved dead letter; an old
# open one is an order still to be booked and stays
psql($db, "INSERT INTO dead_letters (shop, reason, status, payload, created_at)"
          . " VALUES ('$B', 'bc_rejected', 'resolved', '{\"old\":1}',"
          . " now() - interval '40 days'),"
          . " ('$B', 'bc_rejected', 'open', '{\"old\":2}',"
          . " now() - interval '40 days')");
psql($db, "UPDATE privacy_requests SET received_at = now() - interval '40 days'");
wait_until('purged', 15, sub {
    row("SELECT count(*) FROM privacy_requests WHERE export IS NOT NULL")->[0] == 0
    && row("SELECT count(*) FROM dead_letters WHERE payload = '{\"old\":1}'")->[0] == 0 });
pass 'retention: the old export emptied, the old resolved dead letter purged';
is row("SELECT count(*) FROM dead_letters WHERE payload = '{\"old\":2}'")->[0], 1,
    'retention: the old open dead letter stays';

# shop/redact: everything of the shop goes
xadd('shop/redact', $A, fixture('shop-redact.json'));
wait_until('shop redacted', 15, sub { audit($A, 'shop_redact')->[0] == 1 });
is row("SELECT count(*) FROM bc_order_ledger WHERE shop = '$A'")->[0], 0,
    'shop/redact: ledger rows gone';
is row("SELECT count(*) FROM shops WHERE domain = '$A'")->[0], 0, 'shop/redact: shop row gone';
is row("SELECT count(*) FROM privacy_requests WHERE shop = '$A'")->[0], 0,
    'shop/redact: exports gone';
is row("SELECT count(*) FROM dead_letters WHERE shop = '$A'")->[0], 0,
    'shop/redact: dead letters gone';
is row("SELECT count(*) FROM bc_order_sync WHERE shopify_order_id IN"
       . " (6021450011001, 6021450011004)")->[0], 0, 'shop/redact: order sync rows gone';
is row("SELECT count(*) FROM bc_duplicate_checks WHERE shopify_order_id IN"
       . " (6021450011001, 6021450011004)")->[0], 0,
    'shop/redact: duplicate check records gone';
is row("SELECT count(*) FROM bc_order_ledger_v1_duplicates WHERE shop = '$A'")->[0], 0,
    'shop/redact: archived ledger rows gone';
like audit($A, 'shop_redact')->[1], qr/"order_sync_rows": 2\b/,
    'shop/redact: the audit row counts them';
my @left = grep { /^\Q$A\E$/ } split /\n/, redis('XRANGE', $stream, '-', '+');
is scalar @left, 1, 'shop/redact: only the redact entry itself is left in the stream';
is shop_row($B)->[0], 'active', 'shop/redact: other shops untouched';

is stop_worker($worker), 0, 'worker stops cleanly';

done_testing();

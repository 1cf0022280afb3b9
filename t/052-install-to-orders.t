#!/usr/bin/perl
# Issue 5's "done when", in one run with nothing built by hand: a browser
# installs the app on a shop (nginx's /oauth/install -> the sandbox's
# authorize page -> nginx's /oauth/callback, all over verified HTTPS);
# the worker, with the key nginx encrypts with, stores the shop and
# registers its webhooks through the sandbox's GraphQL; "Shopify" then
# delivers, to the URL the subscription names, an orders/create signed
# with the app's client secret: one BC sales order.  app/uninstalled
# drops the tokens and stops every Shopify call for the shop, while an
# order Shopify retries after it still reaches BC.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use HTTP::Tiny;
use URI;
use POSIX qw(strftime);
use Digest::SHA qw(sha256_hex);
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use ShopifyBC::Test;

my $COMPANY = '31b7c38b-2d4e-5437-beff-68c052310a74';
my $APP = 'e2e-install-app';
my $SECRET = 'e2e-install-app-secret';    # signs OAuth queries and webhooks
my $SCOPES = 'read_orders,write_products';
my $TOPICS = 'app/uninstalled,orders/create';
my $API = '2025-10';                      # the worker's SHOPIFY_API_VERSION
my $NGINX_API = '2025-07';                # nginx's, in the install entry only
my $SHOP = 'acme-demo.myshopify.com';     # the fixtures' shop
my $CANARY = 'canary-shop.myshopify.com';
my $KEY = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;

my $run = sprintf '%x%x', time, $$;
my $stream = "t:052:$run";

my $tmp = tempdir(CLEANUP => 1);
open my $kf, '>', "$tmp/token.key" or die $!;
print $kf "$KEY\n";
close $kf;

my $sb = start_sandbox(https => 1, 'shopify-app' => "$APP:$SECRET:$SCOPES");
my $hp = $sb->{https_port};
my $dns = start_dnsstub();
my $ca = test_ca();

# nginx: the intake and the OAuth locations, also on an HTTPS port (the
# state cookie is Secure: a browser sends it back over HTTPS only)
my $sp = free_port();
my $app_url = "https://127.0.0.1:$sp";
my $CALLBACK = "$app_url/webhooks/shopify";
my $nginx = start_nginx(
    stream => $stream, secret => $SECRET, workers => 1,
    http_extra => <<"CONF",
    shopify_oauth_client_id $APP;
    shopify_oauth_client_secret $SECRET;
    shopify_oauth_scopes $SCOPES;
    shopify_oauth_token_key file=$tmp/token.key;
    shopify_oauth_api_version $NGINX_API;
CONF
    server_extra => <<"CONF",
        listen 127.0.0.1:$sp ssl;
        ssl_certificate $ca->{cert};
        ssl_certificate_key $ca->{key};
        location = /oauth/install {
            shopify_oauth_install;
            shopify_oauth_redirect_uri $app_url/oauth/callback;
        }
        location = /oauth/callback {
            shopify_oauth_callback;
            shopify_webhook_stream $stream;
        }
        location = /_shopify_oauth_token {
            internal;
            resolver 127.0.0.1:$dns->{port} valid=30s ipv6=off;
            resolver_timeout 3s;
            proxy_pass https://\$shopify_oauth_shop:$hp/admin/oauth/access_token;
            proxy_pass_request_headers off;
            proxy_set_header Content-Type application/x-www-form-urlencoded;
            proxy_set_header Accept application/json;
            proxy_ssl_server_name on;
            proxy_ssl_name \$shopify_oauth_shop;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_trusted_certificate $sb->{ca};
            proxy_connect_timeout 3s;
            proxy_read_timeout 5s;
            subrequest_output_buffer_size 16k;
        }
CONF
);

my $db = create_database('e2e_install_orders');
my $worker = start_worker(
    database => $db, stream => $stream, company => $COMPANY,
    shipping_account => '40400', name => 'install-worker',
    env => {
        SHOPIFY_CLIENT_ID => $APP,
        SHOPIFY_CLIENT_SECRET => $SECRET,
        SHOPIFY_TOKEN_KEY => $KEY,
        SHOPIFY_API_VERSION => $API,
        SHOPIFY_WEBHOOK_TOPICS => $TOPICS,
        SHOPIFY_WEBHOOK_CALLBACK_URL => $CALLBACK,
        SHOPIFY_CONNECT_TO => "127.0.0.1:$hp",
        SHOPIFY_CA_FILE => $sb->{ca},
        SHOPIFY_MAINTENANCE_INTERVAL_MS => 200,
    });

# --- the browser --------------------------------------------------------
# HTTP::Tiny verifying certificates against the test CA, following
# redirects one by one, with a cookie jar.  *.myshopify.com is the
# sandbox's HTTPS port (as curl --resolve would make it): same name in
# the URL, the SNI and the certificate check.

my %jar;    # host -> name -> { value, path, secure }

my $ua = HTTP::Tiny->new(
    max_redirect => 0, timeout => 10 * slowdown(), verify_SSL => 1,
    SSL_options => { SSL_ca_file => $sb->{ca} });
my $resolve = sub { $_[0] =~ /\.myshopify\.com$/ ? '127.0.0.1' : $_[0] };

sub set_cookies {
    my ($url, $res) = @_;
    my $sc = $res->{headers}{'set-cookie'} // [];
    for my $c (ref $sc ? @$sc : $sc) {
        my ($pair, @attr) = split /;\s*/, $c;
        my ($name, $value) = split /=/, $pair, 2;
        my %a = map { my ($k, $v) = split /=/, $_, 2; (lc $k => $v // 1) }
                @attr;
        # a browser refuses a __Host- cookie that is not Secure, Path=/,
        # without Domain, or not from HTTPS
        next if $name =~ /^__Host-/
                && !($a{secure} && ($a{path} // '') eq '/' && !$a{domain}
                     && $url->scheme eq 'https');
        if (defined $a{'max-age'} && $a{'max-age'} <= 0) {
            delete $jar{ $url->host }{$name};
            next;
        }
        $jar{ $url->host }{$name} = { value => $value,
                                      path => $a{path} // '/',
                                      secure => $a{secure} };
    }
}

sub cookie_header {
    my ($url) = @_;
    my $c = $jar{ $url->host } || {};
    return join '; ', map { "$_=$c->{$_}{value}" } sort grep {
        index($url->path, $c->{$_}{path}) == 0
        && (!$c->{$_}{secure} || $url->scheme eq 'https')
    } keys %$c;
}

# GET $url and every redirect after it: the list of hops
sub browse {
    my ($url) = @_;
    my @hops;
    for (1 .. 5) {
        my $u = URI->new($url);
        # the shop's default port is the sandbox's
        $u->port($hp) if $u->host =~ /\.myshopify\.com$/ && $u->port == 443;
        my $cookie = cookie_header($u);
        my $res = $ua->get("$u", { peer => $resolve, headers => {
            $cookie ? (Cookie => $cookie) : () } });
        set_cookies($u, $res);
        my $kept = $jar{ $u->host } || {};
        push @hops, { url => $u, sent_cookie => $cookie, res => $res,
                      jar => join '; ', map { "$_=$kept->{$_}{value}" }
                                        sort keys %$kept };
        last unless $res->{status} =~ /^30[1237]$/;
        $url = URI->new_abs($res->{headers}{location}, $u)->as_string;
    }
    return @hops;
}

sub install {
    my ($shop) = @_;
    return browse("$app_url/oauth/install?shop=$shop");
}

# --- helpers --------------------------------------------------------------

sub row {
    my ($sql) = @_;
    my @r = psql($db, $sql);
    return $r[0];
}

sub shop_row {
    my ($shop) = @_;
    return row("SELECT status, mode, scopes, coalesce(access_token, ''),"
        . " coalesce(refresh_token, ''), webhooks_synced_at IS NOT NULL,"
        . " uninstalled_at IS NOT NULL, coalesce(requested_scopes, ''),"
        . " coalesce(webhooks_synced_at::text, '')"
        . " FROM shops WHERE domain = '$shop'");
}

sub subs_of {
    my ($shop) = @_;
    my $v = sandbox_call('GET', "/_sandbox/shopify/admin/webhooks?shop=$shop")
            ->{value};
    return $v;
}

sub shop_log {
    my ($shop, $since) = @_;
    return [ grep { ($_->{shop} // '') eq $shop }
             @{ sandbox_call('GET', '/_sandbox/shopify/requests?since='
                                    . ($since // 0))->{value} } ];
}

sub iso_now {
    my ($offset) = @_;
    my $t = time + ($offset // 0);
    # Shopify's format: nanoseconds
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime $t)
         . sprintf('.%09dZ', ($t - int $t) * 1e9);
}

# Shopify's delivery: a POST to the subscription's URL, over HTTPS,
# signed with the app's client secret (unless told otherwise)
sub shopify_delivers {
    my ($uri, $topic, $body, %h) = @_;
    my $secret = delete $h{secret} // $SECRET;
    my $res = $ua->post($uri, { content => $body, headers => {
        'Content-Type' => 'application/json',
        'X-Shopify-Hmac-Sha256' => sign($body, $secret),
        'X-Shopify-Topic' => $topic,
        'X-Shopify-Shop-Domain' => $SHOP,
        'X-Shopify-API-Version' => $API,
        'X-Shopify-Triggered-At' => iso_now(),
        %h } });
    return $res;
}

# AES-256-GCM "v1." blob -> plain text, with the key and the shop as AAD
sub decrypt {
    my ($v, $aad) = @_;
    open my $fh, '-|', 'python3', '-c', <<'PY', $KEY, $v, $aad or die $!;
import base64, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, v, aad = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
raw = base64.b64decode(v[3:], validate=True)
try:
    print(AESGCM(key).decrypt(raw[:12], raw[12:], aad).decode())
except Exception:
    sys.exit(3)
PY
    my $out = <$fh>;
    close $fh;
    return undef if $? || !defined $out;
    chomp $out;
    return $out;
}

sub order_copies {
    my ($id) = @_;
    return scalar grep { $_->{order}{externalDocumentNumber} =~ /\b$id\b/ }
        @{ sandbox_orders() };
}

sub ledger {
    my ($id) = @_;
    return row("SELECT state, coalesce(bc_number, ''), shop"
               . " FROM bc_order_ledger WHERE shopify_order_id = $id");
}

# --- 1. the install -----------------------------------------------------

my @hops = install($SHOP);
is scalar @hops, 3, 'install: three hops';
my ($inst, $auth, $cb) = @hops;
is $inst->{res}{status}, 302, 'install: nginx redirects';
like $inst->{jar}, qr/^__Host-shopify_oauth=v1\./,
    'install: the browser keeps the state cookie (Secure, __Host-)';
is $auth->{url}->host, $SHOP, "authorize: at the shop's own host";
is $auth->{url}->path, '/admin/oauth/authorize', 'authorize: its path';
is $auth->{res}{status}, 302, 'authorize: the sandbox approves';
is $cb->{url}->host . ':' . $cb->{url}->port . $cb->{url}->path,
    "127.0.0.1:$sp/oauth/callback", 'callback: back at nginx';
like $cb->{sent_cookie}, qr/^__Host-shopify_oauth=v1\./,
    'callback: the browser sent the state cookie back';
is $cb->{res}{status}, 200, 'callback: 200' or diag $cb->{res}{content};
like $cb->{res}{content}, qr/\Q$SHOP\E is installed/, 'callback: installed page';
is $cb->{jar}, '', 'callback: the state cookie is cleared';

my @oauth = grep { $_->{endpoint} } @{ shop_log($SHOP) };
is_deeply [map { "$_->{endpoint} $_->{outcome}" } @oauth],
    ['authorize approved', 'access_token ok'],
    'sandbox: one authorize, one code exchange, both fine';
is $oauth[1]{sni}, $SHOP, 'sandbox: nginx exchanged the code over TLS to the shop';

# --- 2. the worker: shop row, tokens, webhooks --------------------------

my $r = wait_until('the shop registered', 30, sub {
    my $x = shop_row($SHOP);
    $x && $x->[5] eq 't' ? $x : undef;
});
is_deeply [@$r[0, 1, 2, 7]], ['active', 'oauth', $SCOPES, $SCOPES],
    'shops row: active, OAuth, granted and requested scopes';
like $r->[3], qr/^v1\.[A-Za-z0-9+\/]+=*$/, 'shops row: access token encrypted';
like $r->[4], qr/^v1\.[A-Za-z0-9+\/]+=*$/, 'shops row: refresh token encrypted';
my $at = decrypt($r->[3], $SHOP);
my $rt = decrypt($r->[4], $SHOP);
like $at // '', qr/^shpat_/, 'the stored access token opens with the shared key';
like $rt // '', qr/^shprt_/, 'so does the refresh token';
my %live = map { $_->{sha256} => $_ }
           @{ sandbox_call('GET', '/_sandbox/shopify/oauth/tokens')->{value} };
is join(' ', map { $live{ sha256_hex($_ // '') }{shop} // 'none' } $at, $rt),
    "$SHOP $SHOP", 'both are the live tokens the sandbox issued to the shop';
is row("SELECT count(*) FROM shops WHERE access_token LIKE '%shpat_%'"
       . " OR refresh_token LIKE '%shprt_%'")->[0], 0,
    'no plain token in the shops table';

my %want = map { (uc($_) =~ tr{/}{_}r) => $CALLBACK } split /,/, $TOPICS;
my %have = map { $_->{topic} => $_->{uri} } @{ subs_of($SHOP) };
is_deeply \%have, \%want,
    'sandbox: the subscriptions are the configured topics at the callback URL';
my @gql = grep { $_->{operation} } @{ shop_log($SHOP) };
ok @gql >= 3, 'the worker listed and created them through GraphQL';
# the stream's first entry: the install
my (undef, %entry) = split /\n/, redis('XRANGE', $stream, '-', '+', 'COUNT', 1);
is "$entry{topic} $entry{api_version}", "shopify/installed $NGINX_API",
    "the install entry carries nginx's shopify_oauth_api_version";
is_deeply [sort keys %{ { map { $_->{path} => 1 } @gql } }],
    ["/admin/api/$API/graphql.json"],
    "GraphQL at the worker's SHOPIFY_API_VERSION, whatever the entry says";
is_deeply [grep { $_->{status} != 200 } @gql], [], 'every GraphQL call answered 200';

# --- 3. an order, delivered where the subscription says ------------------

my $orders_uri = $have{ORDERS_CREATE};
my $basic = fixture('orders-create-basic.json');
my ($oid) = $basic =~ /^\{"id":(\d+),/;

my $res = shopify_delivers($orders_uri, 'orders/create', $basic,
                           'X-Shopify-Webhook-Id' => "$run-1",
                           secret => 'not-the-client-secret');
is $res->{status}, 401, 'signed with another secret: 401';
$res = shopify_delivers($orders_uri, 'orders/create', $basic,
                        'X-Shopify-Webhook-Id' => "$run-1");
is $res->{status}, 200, 'orders/create signed with the client secret: 200'
    or diag $res->{content};
# Shopify retries when it thinks the answer was late
$res = shopify_delivers($orders_uri, 'orders/create', $basic,
                        'X-Shopify-Webhook-Id' => "$run-1");
is $res->{status}, 200, 'the same delivery again: 200';
my $l = wait_until('the order created in BC', 30, sub {
    my $x = ledger($oid);
    $x && $x->[0] =~ /^(created|failed)$/ ? $x : undef;
});
is_deeply [@$l[0, 2]], ['created', $SHOP], 'ledger: created, for the shop';
is order_copies($oid), 1, 'BC: exactly one sales order';

# --- 4. a second shop installs: the canary of the maintenance passes ----

@hops = install($CANARY);
is $hops[-1]{res}{status}, 200, 'second shop installed';
wait_until('the second shop registered', 30, sub {
    my $x = shop_row($CANARY);
    $x && $x->[5] eq 't';
});

# --- 5. app/uninstalled ---------------------------------------------------

# Shopify revokes the tokens and drops the subscriptions, and delivers
# app/uninstalled to the subscription's URL
my $uninstall_uri = $have{APP_UNINSTALLED};
sandbox_call('POST', '/_sandbox/shopify/oauth/revoke', { shop => $SHOP });
sandbox_call('DELETE', "/_sandbox/shopify/admin/webhooks?shop=$SHOP");
my $before = sandbox_call('GET', '/_sandbox/shopify/requests')->{last};
$res = shopify_delivers($uninstall_uri, 'app/uninstalled',
                        fixture('app-uninstalled.json'),
                        'X-Shopify-Webhook-Id' => "$run-uninstall");
is $res->{status}, 200, 'app/uninstalled delivered: 200';
$r = wait_until('the shop uninstalled', 30, sub {
    my $x = shop_row($SHOP);
    $x->[0] eq 'uninstalled' ? $x : undef;
});
is_deeply [@$r[3, 4, 6]], ['', '', 't'],
    'shops row: both tokens NULL, uninstalled_at set';
is row("SELECT count(*) FROM shop_audit WHERE shop = '$SHOP'"
       . " AND action = 'uninstalled'")->[0], 1, 'audit row "uninstalled"';

# an order from before the uninstall that Shopify retries after it
my $later = $basic;
my $oid2 = $oid + 1;
$later =~ s/^\{"id":$oid,/{"id":$oid2,/ or die 'fixture changed';
$res = shopify_delivers($orders_uri, 'orders/create', $later,
                        'X-Shopify-Webhook-Id' => "$run-2",
                        'X-Shopify-Triggered-At' => iso_now(-5));
is $res->{status}, 200, 'a later orders/create delivery: 200';

# work that would call Shopify for the uninstalled shop: a due
# registration; the canary's, due too, proves two maintenance passes ran
for my $round (1, 2) {
    my $synced = shop_row($CANARY)->[8];
    psql($db, "UPDATE shops SET webhooks_due_at = now()"
              . " WHERE domain IN ('$SHOP', '$CANARY')");
    wait_until("maintenance pass $round", 30, sub {
        shop_row($CANARY)->[8] gt $synced });
}
$l = wait_until('the later order created in BC', 30, sub {
    my $x = ledger($oid2);
    $x && $x->[0] =~ /^(created|failed)$/ ? $x : undef;
});
is $l->[0], 'created', 'the order received after the uninstall became a BC order';
is order_copies($oid2), 1, 'BC: exactly one sales order for it';
is order_copies($oid), 1, 'BC: still one for the first';
is_deeply shop_log($SHOP, $before), [],
    'sandbox: no Shopify request for the shop after the uninstall';
ok scalar @{ shop_log($CANARY, $before) } >= 2,
    'while the other shop was called in those passes';
is shop_row($SHOP)->[0], 'uninstalled', 'the shop stays uninstalled';

my $wlog = do { local (@ARGV, $/) = $worker->{log}; <> };
unlike $wlog, qr/shpat_|shprt_|\Q$SECRET\E/,
    'no token or secret in the worker log';

is stop_worker($worker), 0, 'worker stops cleanly';

done_testing();

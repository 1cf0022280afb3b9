# The app install's hostile input: forged, stale and replayed callbacks,
# missing or foreign cookies, shop names with fragments, ports, schemes,
# escapes, NULs, capitals, too long.  Each gets its 4xx and one log line,
# and nothing leaves nginx: once every block has run, the sandbox's Shopify
# request log is empty (nothing received, no connection on its HTTPS port)
# and so is the stub DNS server's query log; the token location of these
# configurations would reach both (t/051 shows it does for a good one).

use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use File::Temp qw(tempdir);
use ShopifyBC::Test qw(start_sandbox start_dnsstub redis slowdown);

$ENV{TEST_NGINX_REDIS_PORT} ||= 6379;

our $APP = 't050-client';
our $SECRET = 't050-client-secret';
our $RUN = sprintf '%x%x', time, $$;
our $STREAM = "t:050:$RUN";
our $STATE_KEY = hmac_sha256('shopify-bc oauth state cookie v1', $SECRET);
our $SHOP = 'acme-demo.myshopify.com';

# the requests are built before the first block runs: under valgrind the
# last block runs many minutes later, so the window is wider there
our $WINDOW = slowdown() > 1 ? 7200 : 90;
$ENV{TEST_NGINX_T050_WINDOW} = "${WINDOW}s";

my $sb = start_sandbox(https => 1, 'shopify-app' => "$APP:$SECRET:read_orders");
my $dns = start_dnsstub();
my $tmp = tempdir(CLEANUP => 1);
open my $kf, '>', "$tmp/key" or die $!;
print $kf join('', map { sprintf '%02x', $_ * 7 % 256 } 1 .. 32), "\n";
close $kf;

$ENV{TEST_NGINX_T050_SB_HTTPS} = $sb->{https_port};
$ENV{TEST_NGINX_T050_CA} = $sb->{ca};
$ENV{TEST_NGINX_T050_DNS_PORT} = $dns->{port};
$ENV{TEST_NGINX_T050_KEY} = "$tmp/key";
$ENV{TEST_NGINX_T050_STREAM} = $STREAM;

# a state Redis already knows as used (the replay case)
our $USED_STATE = 'f' x 32;
redis('SET', "$STREAM:oauth-state:$USED_STATE", '1', 'EX', '600');

sub esc {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

# Shopify's signed string from decoded pairs (see sandbox/shopify_oauth.py)
sub signable {
    my @pairs = @_;
    my (%single, %arrays, @order);
    while (my ($k, $v) = splice @pairs, 0, 2) {
        next if $k eq 'hmac' || $k eq 'signature';
        if ($k =~ /^(.*)\[\]$/) {
            push @{ $arrays{$1} }, $v;
        } else {
            $single{$k} = $v;
        }
    }
    $single{$_} = '[' . join(', ', map { qq("$_") } @{ $arrays{$_} }) . ']'
        for keys %arrays;
    my @items = map {
        (my $k = $_) =~ s/([%&=])/sprintf '%%%02X', ord $1/ge;
        (my $v = $single{$_}) =~ s/([%&])/sprintf '%%%02X', ord $1/ge;
        "$k=$v";
    } keys %single;
    return join '&', sort @items;
}

# a callback query signed with $secret (the app's unless given); pairs as
# decoded values, in the order sent
sub signed {
    my ($secret, @pairs) = @_;
    my $mac = hmac_sha256_hex(signable(@pairs), $secret // $SECRET);
    my @q;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        push @q, esc($k) . '=' . esc($v);
    }
    return join '&', @q, "hmac=$mac";
}

sub callback {
    my (%o) = @_;
    my @pairs = (code => $o{code} // 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6',
                 host => 'YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYWNtZS1kZW1v',
                 shop => $o{shop} // $SHOP,
                 state => $o{state} // ('a' x 32),
                 timestamp => $o{timestamp} // time,
                 @{ $o{extra} || [] });
    return "GET /oauth/callback?" . signed($o{secret}, @pairs);
}

sub cookie {
    my (%o) = @_;
    my $state = $o{state} // ('a' x 32);
    my $shop = $o{shop} // $SHOP;
    my $exp = $o{expiry} // time + 86400;
    my $mac = hmac_sha256_hex("v1.$state.$exp.$shop", $o{key} // $STATE_KEY);
    return "Cookie: __Host-shopify_oauth=v1.$state.$exp.$mac.$shop\n";
}


add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('http_config', <<'CONF') unless defined $block->http_config;
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T050_STREAM;
shopify_oauth_client_id t050-client;
shopify_oauth_client_secret t050-client-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T050_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T050_WINDOW;
CONF

    $block->set_value('config', <<'CONF') unless defined $block->config;
location = /oauth/install {
    shopify_oauth_install;
    shopify_oauth_redirect_uri https://app.example/oauth/callback;
}
location = /oauth/callback { shopify_oauth_callback; }
location = /_shopify_oauth_token {
    internal;
    resolver 127.0.0.1:$TEST_NGINX_T050_DNS_PORT valid=30s ipv6=off;
    proxy_pass https://$shopify_oauth_shop:$TEST_NGINX_T050_SB_HTTPS/admin/oauth/access_token;
    proxy_pass_request_headers off;
    proxy_set_header Content-Type application/x-www-form-urlencoded;
    proxy_ssl_server_name on;
    proxy_ssl_name $shopify_oauth_shop;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_T050_CA;
    proxy_connect_timeout 3s;
    proxy_read_timeout 5s;
}
CONF
});

no_long_string();
run_tests();

# every block above was hostile: nothing may have left nginx, neither a
# request or a connection to Shopify, nor a DNS query for any name
{
    my $log = ShopifyBC::Test::shopify_requests();
    is_deeply($log->{value}, [], 'no request reached the Shopify sandbox');
    is($log->{connections}, 0, 'no connection to its HTTPS port');
    is_deeply(ShopifyBC::Test::dns_queries($dns), [], 'no DNS query at all');
}

END {
    redis('DEL', "$STREAM:oauth-state:$USED_STATE") if $STREAM;
}

__DATA__

=== TEST 1: install: a fragment in the shop ("evil.example#.myshopify.com")
--- request eval
["GET /oauth/install?shop=evil.example%23.myshopify.com"]
--- error_code eval
[400]
--- response_body_like eval
[qr/Invalid shop/]
--- error_log
install: invalid shop parameter
--- no_error_log
[error]



=== TEST 2: install: a raw '#' reaches no URL either
--- raw_request eval
"GET /oauth/install?shop=evil.example#.myshopify.com HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- error_code: 400
--- response_headers
Location:
--- no_error_log
[error]



=== TEST 3: install: a port after the shop
--- request eval
["GET /oauth/install?shop=acme.myshopify.com:443"]
--- error_code eval
[400]
--- response_body_like eval
[qr/Invalid shop/]
--- response_headers eval
["Location:\nSet-Cookie:"]
--- no_error_log
[error]



=== TEST 4: install: a scheme before the shop
--- request eval
["GET /oauth/install?shop=https://acme.myshopify.com"]
--- error_code eval
[400]
--- response_body_like eval
[qr/Invalid shop/]
--- no_error_log
[error]



=== TEST 5: install: percent-encoded dot, slash, at-sign, NUL
--- request eval
["GET /oauth/install?shop=acme%2emyshopify.com",
 "GET /oauth/install?shop=evil.example%2F.myshopify.com",
 "GET /oauth/install?shop=user%40acme.myshopify.com",
 "GET /oauth/install?shop=acme.myshopify.com%00"]
--- error_code eval
[400, 400, 400, 400]
--- response_body_like eval
[qr/Invalid shop/, qr/Invalid shop/, qr/Invalid shop|Malformed/,
 qr/Malformed query/]
--- no_error_log
[error]



=== TEST 6: install: look-alikes and malformed names
--- request eval
["GET /oauth/install?shop=acme.myshopify.com.evil.example",
 "GET /oauth/install?shop=-acme.myshopify.com",
 "GET /oauth/install?shop=.myshopify.com",
 "GET /oauth/install?shop=acme.evil.myshopify.com",
 "GET /oauth/install?shop=acme_x.myshopify.com",
 "GET /oauth/install?shop=acme.myshopify.com/",
 "GET /oauth/install?shop=acme.myshopify.com%20",
 "GET /oauth/install?shop=",
 "GET /oauth/install"]
--- error_code eval
[(400) x 9]
--- response_body_like eval
[(qr/Invalid shop|Missing shop/) x 9]
--- no_error_log
[error]



=== TEST 7: install: a name one byte over a DNS label (64), and at 63
--- request eval
["GET /oauth/install?shop=" . ('a' x 64) . ".myshopify.com",
 "GET /oauth/install?shop=" . ('b' x 63) . ".myshopify.com"]
--- error_code eval
[400, 302]
--- response_body_like eval
[qr/Invalid shop/, qr/Redirecting/]
--- no_error_log
[error]



=== TEST 8: install: the shop given twice is refused
--- request eval
["GET /oauth/install?shop=acme.myshopify.com&shop=evil.myshopify.com"]
--- error_code eval
[400]
--- response_body_like eval
[qr/Malformed query/]
--- error_log
given twice
--- no_error_log
[error]



=== TEST 9: install: capitals are folded, the redirect names the lowercase shop
--- request eval
["GET /oauth/install?shop=Acme-Demo.MyShopify.COM"]
--- error_code eval
[302]
--- response_headers_like eval
["Location: https://acme-demo\\.myshopify\\.com/admin/oauth/authorize\\?client_id=t050-client&scope=read_orders&redirect_uri=https%3A%2F%2Fapp\\.example%2Foauth%2Fcallback&state=[0-9a-f]{32}\nSet-Cookie: __Host-shopify_oauth=v1\\.[0-9a-f]{32}\\.\\d+\\.[0-9a-f]{64}\\.acme-demo\\.myshopify\\.com; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax\nCache-Control: no-store"]
--- response_body_like eval
[qr/Redirecting to Shopify/]
--- no_error_log
[error]



=== TEST 10: install opened by Shopify: bad signature 401, stale 400, good 302
--- request eval
["GET /oauth/install?" . ::signed('not-the-secret', shop => $::SHOP, timestamp => time),
 "GET /oauth/install?" . ::signed(undef, shop => $::SHOP, timestamp => time - 2 * $::WINDOW),
 "GET /oauth/install?" . ::signed(undef, host => 'YWRtaW4', shop => $::SHOP, timestamp => time),
 "GET /oauth/install?hmac=zz&shop=$::SHOP&timestamp=" . time]
--- error_code eval
[401, 400, 302, 401]
--- response_body_like eval
[qr/Invalid signature/, qr/expired/, qr/Redirecting/, qr/Invalid signature/]
--- no_error_log
[error]



=== TEST 11: install: POST is not allowed
--- request
POST /oauth/install?shop=acme.myshopify.com
x=1
--- error_code: 405
--- response_headers
Allow: GET
--- no_error_log
[error]



=== TEST 12: callback without the install cookie: 403, nothing sent
--- request eval
[::callback()]
--- error_code eval
[403]
--- response_body_like eval
[qr/does not belong to this browser/]
--- response_headers eval
["Set-Cookie: __Host-shopify_oauth=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"]
--- error_log
refused: no install cookie
--- no_error_log
[error]



=== TEST 13: forged callback (signed with another secret): 401
--- request eval
[::callback(secret => 'a-guessed-secret')]
--- more_headers eval
[::cookie()]
--- error_code eval
[401]
--- response_body_like eval
[qr/Invalid signature/]
--- error_log
query signature does not match
--- no_error_log
[error]



=== TEST 14: callback whose signed values were changed afterwards: 401
--- request eval
[::callback() =~ s/code=a1b2/code=ffff/r, ::callback() =~ s/timestamp=\d+/timestamp=1/r,
 ::callback() . "&extra=1"]
--- more_headers eval
[::cookie(), ::cookie(), ::cookie()]
--- error_code eval
[401, 401, 401]
--- response_body_like eval
[qr/Invalid signature/, qr/Invalid signature/, qr/Invalid signature/]
--- no_error_log
[error]



=== TEST 15: stale and future callbacks (correctly signed): 400
--- request eval
[::callback(timestamp => time - 2 * $::WINDOW), ::callback(timestamp => time + 2 * $::WINDOW),
 ::callback(timestamp => 'soon')]
--- more_headers eval
[::cookie(), ::cookie(), ::cookie()]
--- error_code eval
[400, 400, 400]
--- response_body_like eval
[qr/expired/, qr/expired/, qr/expired/]
--- no_error_log
[error]



=== TEST 16: a state that is not the cookie's: 403
--- request eval
[::callback(state => 'b' x 32)]
--- more_headers eval
[::cookie(state => 'a' x 32)]
--- error_code eval
[403]
--- response_body_like eval
[qr/does not belong/]
--- error_log
state does not match the install cookie
--- no_error_log
[error]



=== TEST 17: a cookie issued for another shop: 403
--- request eval
[::callback(shop => 'other.myshopify.com')]
--- more_headers eval
[::cookie(shop => $::SHOP)]
--- error_code eval
[403]
--- response_body_like eval
[qr/does not belong/]
--- error_log
shop does not match the install cookie
--- no_error_log
[error]



=== TEST 18: a forged cookie, an expired one, a malformed one: 403
--- request eval
[::callback(), ::callback(), ::callback()]
--- more_headers eval
[::cookie(key => 'guessed'), ::cookie(expiry => time - 5),
 "Cookie: __Host-shopify_oauth=v1.garbage\n"]
--- error_code eval
[403, 403, 403]
--- response_body_like eval
[qr/does not belong/, qr/does not belong/, qr/does not belong/]
--- no_error_log
[error]



=== TEST 19: a replayed state (already used in Redis): 403, nothing sent
--- request eval
[::callback(state => $::USED_STATE)]
--- more_headers eval
[::cookie(state => $::USED_STATE)]
--- error_code eval
[403]
--- response_body_like eval
[qr/already used/]
--- error_log
the state was used before
--- no_error_log
[error]



=== TEST 20: callback shop names that Shopify never signs: 400
--- request eval
[::callback(shop => 'evil.example#.myshopify.com'),
 ::callback(shop => 'Acme-Demo.myshopify.com'),
 ::callback(shop => 'acme-demo.myshopify.com:443'),
 ::callback(shop => 'https://acme-demo.myshopify.com'),
 ::callback(shop => 'acme-demo.myshopify.com.'),
 ::callback(shop => ('c' x 64) . '.myshopify.com')]
--- more_headers eval
[::cookie(shop => 'evil.example#.myshopify.com'), ::cookie(shop => 'acme-demo.myshopify.com'),
 ::cookie(), ::cookie(), ::cookie(), ::cookie()]
--- error_code eval
[(400) x 6]
--- response_body_like eval
[(qr/Invalid shop/) x 6]
--- no_error_log
[error]



=== TEST 21: malformed callback queries: 400
--- request eval
["GET /oauth/callback?code=x&code=y&hmac=00&shop=$::SHOP&state=" . 'a' x 32 . "&timestamp=1",
 "GET /oauth/callback?code=%zz&hmac=00&shop=$::SHOP",
 "GET /oauth/callback?code=a%00b&hmac=00&shop=$::SHOP",
 "GET /oauth/callback?" . ('x=1&' x 40) . "shop=$::SHOP",
 "GET /oauth/callback?shop=$::SHOP&state=abc&timestamp=1",
 "GET /oauth/callback?code=abc&shop=$::SHOP&state=abc&timestamp=1&hmac="]
--- error_code eval
[400, 400, 400, 400, 400, 400]
--- response_body_like eval
[qr/Malformed query/, qr/Malformed query/, qr/Malformed query/, qr/Malformed query/,
 qr/Incomplete callback/, qr/Incomplete callback/]
--- no_error_log
[error]



=== TEST 22: a signed but malformed code or state: refused before anything
--- request eval
[::callback(code => 'abc def'), ::callback(code => 'x' x 300),
 ::callback(state => 'A' x 32), ::callback(state => 'a' x 31)]
--- more_headers eval
[::cookie(), ::cookie(), ::cookie(state => 'A' x 32), ::cookie()]
--- error_code eval
[400, 400, 403, 403]
--- response_body_like eval
[qr/Malformed authorization code/, qr/Malformed authorization code/,
 qr/does not belong/, qr/does not belong/]
--- no_error_log
[error]



=== TEST 23: extra signed parameters, arrays and escapes verify (then no cookie: 403)
--- request eval
[::callback(extra => ['ids[]' => '1', 'ids[]' => '2', note => 'a&b%c=d e+f', 'k=ey' => 'v']),
 ::callback(extra => ['ids[]' => 'quo"te'])]
--- error_code eval
[403, 401]
--- response_body_like eval
[qr/does not belong/, qr/Invalid signature/]
--- no_error_log
[error]



=== TEST 24: callback: POST is not allowed
--- request eval
["POST /oauth/callback\nx=1"]
--- error_code eval
[405]
--- response_body_like eval
[qr/not allowed/]
--- no_error_log
[error]



=== TEST 25: log line: install link signed with another secret
--- request eval
"GET /oauth/install?" . ::signed('not-the-secret', shop => $::SHOP, timestamp => time)
--- error_code: 401
--- error_log
query signature does not match
--- no_error_log
[error]



=== TEST 26: log line: a stale callback
--- request eval
::callback(timestamp => time - 2 * $::WINDOW)
--- more_headers eval
::cookie()
--- error_code: 400
--- error_log
signed request too old
--- no_error_log
[error]



=== TEST 27: log line: a callback from the future
--- request eval
::callback(timestamp => time + 2 * $::WINDOW)
--- more_headers eval
::cookie()
--- error_code: 400
--- error_log
signed request from the future
--- no_error_log
[error]



=== TEST 28: log line: a forged cookie
--- request eval
::callback()
--- more_headers eval
::cookie(key => 'guessed')
--- error_code: 403
--- error_log
install cookie with a bad signature
--- no_error_log
[error]



=== TEST 29: log line: an expired cookie
--- request eval
::callback()
--- more_headers eval
::cookie(expiry => time - 5)
--- error_code: 403
--- error_log
install cookie expired
--- no_error_log
[error]



=== TEST 30: log line: a callback shop with capitals
--- request eval
::callback(shop => 'Acme-Demo.myshopify.com')
--- more_headers eval
::cookie()
--- error_code: 400
--- error_log
callback: invalid shop parameter
--- no_error_log
[error]



=== TEST 31: log line: a malformed code
--- request eval
::callback(code => 'abc def')
--- more_headers eval
::cookie()
--- error_code: 400
--- error_log
malformed code
--- no_error_log
[error]



=== TEST 32: log line: signed arrays and escapes verify, then the missing cookie is named
--- request eval
::callback(extra => ['ids[]' => '1', 'ids[]' => '2', note => 'a&b%c=d e+f', 'k=ey' => 'v'])
--- error_code: 403
--- error_log
refused: no install cookie
--- no_error_log
query signature does not match
[error]



=== TEST 33: Redis unreachable: a good callback gets 503 and nothing is sent
--- http_config
shopify_redis 127.0.0.1:9;
shopify_webhook_stream $TEST_NGINX_T050_STREAM;
shopify_oauth_client_id t050-client;
shopify_oauth_client_secret t050-client-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T050_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T050_WINDOW;
--- request eval
::callback(state => 'c' x 32)
--- more_headers eval
::cookie(state => 'c' x 32)
--- error_code: 503
--- response_body_like eval
qr/Temporarily unavailable/
--- error_log
not handled: redis
connect to redis "127.0.0.1:9" failed



=== TEST 34: an over-long query (5000 bytes) is refused whole
--- request eval
"GET /oauth/install?shop=acme.myshopify.com&pad=" . ('x' x 5000)
--- error_code: 400
--- response_body_like eval
qr/Malformed query/
--- error_log
query string of 5028 bytes refused
--- no_error_log
[error]

# The webhook intake: signature, delivery headers, methods, sizes, body
# layouts, dedupe and Redis trouble.  Each delivery carries a webhook id
# unique to this run, since the test Redis keeps its data between blocks.

use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256_base64);

$ENV{TEST_NGINX_REDIS_PORT} ||= 6379;

our $SECRET = 'fixture-webhook-secret-not-a-real-key';
our $RUN = sprintf '%x%x', time, $$;
our $TOP = $ENV{SHOPIFY_BC_TOP} || '.';

sub fixture {
    my ($name) = @_;
    open my $fh, '<:raw', "$TOP/fixtures/shopify/$name"
        or die "cannot open fixture $name: $!";
    local $/;
    return scalar <$fh>;
}

sub sign {
    my ($body, $secret) = @_;
    my $mac = hmac_sha256_base64($body, $secret // $SECRET);
    return $mac . '=' x ((4 - length($mac) % 4) % 4);
}

# delivery headers for a body; pass name => undef to leave one out
sub delivery {
    my ($body, $id, %over) = @_;
    my %h = (
        'X-Shopify-Hmac-Sha256' => sign($body),
        'X-Shopify-Topic' => 'orders/create',
        'X-Shopify-Shop-Domain' => 'acme-demo.myshopify.com',
        'X-Shopify-API-Version' => '2024-04',
        'X-Shopify-Webhook-Id' => "t010-$RUN-$id",
        'X-Shopify-Triggered-At' => '2026-03-16T14:12:33.000261327Z',
        'Content-Type' => 'application/json',
        %over,
    );
    return join '', map { "$_: $h{$_}\n" } grep { defined $h{$_} } sort keys %h;
}

our $BASIC = fixture('orders-create-basic.json');
our $LARGE = fixture('orders-create-large.json');

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->http_config) {
        $block->set_value('http_config',
            "shopify_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT};\n");
    }

    if (!defined $block->config) {
        $block->set_value('config', <<"CONF");
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret $SECRET;
    shopify_webhook_stream t:010:webhooks;
}
CONF
    }
});

no_long_string();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a signed orders/create delivery is accepted
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 1)
--- error_code: 200
--- response_body
{"status":"accepted"}
--- no_error_log
[error]
[warn]



=== TEST 2: the same webhook id again is a duplicate, still answered 200
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
::delivery($::BASIC, 2)
--- error_code eval
[200, 200]
--- response_body eval
["{\"status\":\"accepted\"}\n", "{\"status\":\"duplicate\"}\n"]
--- no_error_log
[error]



=== TEST 2b: a later retry of that delivery is logged as a duplicate
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 2)
--- error_code: 200
--- response_body
{"status":"duplicate"}
--- error_log eval
qr/duplicate delivery t010-\w+-2 of "orders\/create" from "acme-demo.myshopify.com" \(same webhook id\), first enqueued as \d+-\d+/
--- no_error_log
[error]



=== TEST 3: no signature header: 401
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 3, 'X-Shopify-Hmac-Sha256' => undef)
--- error_code: 401
--- response_body
{"error":"invalid signature"}
--- error_log
no X-Shopify-Hmac-Sha256 header
--- no_error_log
[error]



=== TEST 4: signed with another secret: 401, and nothing was enqueued
The second request reuses the webhook id: had the first been enqueued,
it would be answered as a duplicate.
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, 4,
    'X-Shopify-Hmac-Sha256' => ::sign($::BASIC, 'another-secret')),
 ::delivery($::BASIC, 4)]
--- error_code eval
[401, 200]
--- response_body eval
["{\"error\":\"invalid signature\"}\n", "{\"status\":\"accepted\"}\n"]
--- no_error_log
[error]



=== TEST 5: a body changed by one byte after signing: 401
--- request eval
my $b = $::BASIC; $b =~ s/"1896-S"/"1896-T"/;
"POST /webhooks/shopify\n" . $b
--- more_headers eval
::delivery($::BASIC, 5)
--- error_code: 401
--- error_log
signature does not match any configured secret
--- no_error_log
[error]



=== TEST 6: a signature that is not base64 of 32 bytes: 401
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, 6, 'X-Shopify-Hmac-Sha256' => '!!not-base64!!'),
 ::delivery($::BASIC, 6, 'X-Shopify-Hmac-Sha256' => 'c2hvcnQ=')]
--- error_code eval
[401, 401]
--- error_log
malformed X-Shopify-Hmac-Sha256 header
--- no_error_log
[error]



=== TEST 7: a repeated signature header is refused even if one is right
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 7) . "X-Shopify-Hmac-Sha256: " . ::sign('x') . "\n"
--- error_code: 401
--- error_log
repeated X-Shopify-Hmac-Sha256 header
--- no_error_log
[error]



=== TEST 8: no topic header: 400, nothing enqueued
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, 8, 'X-Shopify-Topic' => undef), ::delivery($::BASIC, 8)]
--- error_code eval
[400, 200]
--- response_body eval
["{\"error\":\"missing or malformed delivery headers\"}\n",
 "{\"status\":\"accepted\"}\n"]
--- no_error_log
[error]



=== TEST 8b: no topic header is logged
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, '8b', 'X-Shopify-Topic' => undef)
--- error_code: 400
--- error_log eval
qr/no X-Shopify-Topic header \(webhook id t010-\w+-8b, shop acme-demo\.myshopify\.com\)/
--- no_error_log
[error]



=== TEST 9: no shop domain header: 400
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 9, 'X-Shopify-Shop-Domain' => undef)
--- error_code: 400
--- error_log
no X-Shopify-Shop-Domain header
--- no_error_log
[error]



=== TEST 10: no webhook id header: 400
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 10, 'X-Shopify-Webhook-Id' => undef)
--- error_code: 400
--- error_log
no X-Shopify-Webhook-Id header
--- no_error_log
[error]



=== TEST 11: no API version header: 400
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 11, 'X-Shopify-API-Version' => undef)
--- error_code: 400
--- error_log
no X-Shopify-API-Version header
--- no_error_log
[error]



=== TEST 12: a shop domain that is not <name>.myshopify.com: 400
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, 12, 'X-Shopify-Shop-Domain' => 'evil.example'),
 ::delivery($::BASIC, 12,
     'X-Shopify-Shop-Domain' => 'evil.example#.myshopify.com')]
--- error_code eval
[400, 400]
--- error_log
malformed X-Shopify-Shop-Domain header
--- no_error_log
[error]



=== TEST 13: a webhook id with characters unfit for a key: 400
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 13, 'X-Shopify-Webhook-Id' => 'a b*c')
--- error_code: 400
--- error_log
malformed X-Shopify-Webhook-Id header (webhook id -, shop acme-demo.myshopify.com)
--- no_error_log
[error]



=== TEST 13b: a repeated topic header: 400
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, '13b') . "X-Shopify-Topic: orders/updated\n"
--- error_code: 400
--- error_log
repeated X-Shopify-Topic header
--- no_error_log
[error]



=== TEST 13c: a malformed topic or API version: 400
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, '13c', 'X-Shopify-Topic' => 'Orders/Create'),
 ::delivery($::BASIC, '13d', 'X-Shopify-API-Version' => '2024 04')]
--- error_code eval
[400, 400]
--- no_error_log
[error]



=== TEST 13e: a signed but empty body: 400
--- request
POST /webhooks/shopify
--- more_headers eval
::delivery('', '13e') . "Content-Length: 0\n"
--- error_code: 400
--- error_log
shopify webhook: empty body
--- no_error_log
[error]



=== TEST 14: GET is not allowed: 405 with Allow
--- request
GET /webhooks/shopify
--- error_code: 405
--- response_headers
Allow: POST
--- response_body
{"error":"method not allowed"}
--- no_error_log
[error]



=== TEST 14b: PUT is not allowed either, and its body is discarded
--- request eval
"PUT /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, '14b')
--- error_code: 405
--- response_headers
Allow: POST
--- no_error_log
[error]



=== TEST 15: a body over client_max_body_size: 413 before any work
--- config
location = /webhooks/shopify {
    client_max_body_size 1k;
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:010:webhooks;
}
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 15)
--- error_code: 413
--- error_log
client intended to send too large body
--- no_error_log
[alert]
shopify webhook



=== TEST 16: a chunked body over client_max_body_size: 413
--- config
location = /webhooks/shopify {
    client_max_body_size 1k;
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:010:webhooks;
}
--- raw_request eval
my $h = ::delivery($::BASIC, 16);
$h =~ s/\n/\r\n/g;
"POST /webhooks/shopify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
. "Transfer-Encoding: chunked\r\n" . $h . "\r\n"
. sprintf("%x\r\n%s\r\n0\r\n\r\n", length $::BASIC, $::BASIC)
--- error_code: 413
--- error_log
client intended to send too large chunked body
--- no_error_log
[alert]
shopify webhook



=== TEST 17: a chunked body in several chunks is verified as one
--- raw_request eval
my $h = ::delivery($::BASIC, 17);
$h =~ s/\n/\r\n/g;
my $chunks = '';
for (my $i = 0; $i < length $::BASIC; $i += 1000) {
    my $c = substr $::BASIC, $i, 1000;
    $chunks .= sprintf "%x\r\n%s\r\n", length $c, $c;
}
"POST /webhooks/shopify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
. "Transfer-Encoding: chunked\r\n" . $h . "\r\n" . $chunks . "0\r\n\r\n"
--- error_code: 200
--- response_body
{"status":"accepted"}
--- no_error_log
[error]
[warn]



=== TEST 18: a body spilled to a temporary file (250-line order, 345 KB)
--- config
location = /webhooks/shopify {
    client_body_buffer_size 8k;
    client_max_body_size 4m;
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:010:webhooks;
}
--- request eval
"POST /webhooks/shopify\n" . $::LARGE
--- more_headers eval
::delivery($::LARGE, 18)
--- error_code: 200
--- response_body
{"status":"accepted"}
--- error_log
a client request body is buffered to a temporary file
--- no_error_log
[error]



=== TEST 19: client_body_in_file_only keeps the body in a file only
--- config
location = /webhooks/shopify {
    client_body_in_file_only clean;
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:010:webhooks;
}
--- request eval
["POST /webhooks/shopify\n" . $::BASIC, "POST /webhooks/shopify\n" . $::BASIC]
--- more_headers eval
[::delivery($::BASIC, 19, 'X-Shopify-Hmac-Sha256' => ::sign('other')),
 ::delivery($::BASIC, 19)]
--- error_code eval
[401, 200]
--- no_error_log
[error]



=== TEST 20: secret rotation: the old secret still verifies, with a warning
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret new-secret-after-rotation;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:010:webhooks;
}
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 20)
--- error_code: 200
--- error_log
signature matched secret #2, not the first one
--- no_error_log
[error]
fixture-webhook-secret-not-a-real-key



=== TEST 21: the un-prefixed header spelling, in any letter case
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
"shopify-hmac-sha256: " . ::sign($::BASIC) . "\n"
. "Shopify-Topic: orders/create\n"
. "SHOPIFY-SHOP-DOMAIN: acme-demo.myshopify.com\n"
. "shopify-api-version: 2024-04\n"
. "Shopify-Webhook-Id: t010-$::RUN-21\n"
--- error_code: 200
--- response_body
{"status":"accepted"}
--- no_error_log
[error]



=== TEST 22: Redis unreachable: 503 with Retry-After, nothing acknowledged
--- http_config
shopify_redis 127.0.0.1:9;
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 22)
--- error_code: 503
--- response_headers
Retry-After: 5
--- response_body
{"error":"queue unavailable"}
--- error_log
not enqueued
connect to redis "127.0.0.1:9" failed



=== TEST 23: Redis slower than the timeout: 503, and the retry is accepted
Redis is paused for writes for 1.5 s while the reply deadline is 300 ms.
The dropped connection's command never runs, so Shopify's retry (here,
after the pause) is a new delivery, not a duplicate.
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_redis_timeout 300ms;
--- init
system("redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} client pause 1500 write"
       . " >/dev/null") == 0 or die "cannot pause redis";
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 23)
--- error_code: 503
--- response_headers
Retry-After: 5
--- error_log
redis did not answer within 300 ms
dropping redis connection



=== TEST 24: after a Redis pause the same delivery goes through
--- init
sleep 2;
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 23)
--- error_code: 200
--- response_body
{"status":"accepted"}
--- no_error_log
[error]



=== TEST 25: the script cache flushed under a live connection: EVAL fallback
--- init
select undef, undef, undef, 0.3;
system("redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} script flush >/dev/null");
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 25)
--- error_code: 200
--- response_body
{"status":"accepted"}
--- error_log
shopify redis command queued, EVALSHA,
shopify redis command queued, EVAL,
--- no_error_log
[error]



=== TEST 26: the health endpoint answers while Redis is down
--- http_config
shopify_redis 127.0.0.1:9;
--- config
location = /health {
    shopify_health;
}
--- request
GET /health
--- error_code: 200
--- response_body_like
^\{"status":"ok","redis":"(down|connecting)"\}$



=== TEST 27: the health endpoint reports a live Redis connection
--- config
location = /health {
    shopify_health;
}
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
}
--- init
select undef, undef, undef, 0.2;
--- request
GET /health
--- error_code: 200
--- response_body
{"status":"ok","redis":"up"}
--- no_error_log
[error]



=== TEST 28: the client hangs up while the Redis reply is pending
Redis is paused for writes, the client gives up after 200 ms; when the
reply comes the request is long gone, and nothing breaks.
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_redis_timeout 3s;
--- init
select undef, undef, undef, 0.3;
system("redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} client pause 800 write"
       . " >/dev/null") == 0 or die "cannot pause redis";
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 28)
--- timeout: 200ms
--- abort
--- ignore_response
--- wait: 1.2
--- error_log
client prematurely closed connection
--- no_error_log
[alert]
[error]
exited on signal



=== TEST 29: a retry of that delivery finds it enqueued
--- request eval
"POST /webhooks/shopify\n" . $::BASIC
--- more_headers eval
::delivery($::BASIC, 28)
--- error_code: 200
--- response_body
{"status":"duplicate"}
--- no_error_log
[error]

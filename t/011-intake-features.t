# The intake's topic allow-list, event-id dedupe, secrets from a file or
# the environment, its variables, and its Prometheus counters.

use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256_base64);

$ENV{TEST_NGINX_REDIS_PORT} ||= 6379;
$ENV{SHOPIFY_T011_SECRET} = 'secret-from-the-environment';

our $SECRET = 'fixture-webhook-secret-not-a-real-key';
our $RUN = sprintf '%x%x', time, $$;
our $BODY = '{"id":1,"note":"a small delivery"}';

sub sign {
    my ($body, $secret) = @_;
    my $mac = hmac_sha256_base64($body, $secret // $SECRET);
    return $mac . '=' x ((4 - length($mac) % 4) % 4);
}

sub delivery {
    my ($id, %over) = @_;
    my %h = (
        'X-Shopify-Hmac-Sha256' => sign($BODY),
        'X-Shopify-Topic' => 'orders/create',
        'X-Shopify-Shop-Domain' => 'acme-demo.myshopify.com',
        'X-Shopify-API-Version' => '2024-04',
        'X-Shopify-Webhook-Id' => "t011-$RUN-$id",
        %over,
    );
    return join '', map { "$_: $h{$_}\n" } grep { defined $h{$_} } sort keys %h;
}

sub post { "POST /webhooks/shopify\n$BODY" }

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->http_config) {
        $block->set_value('http_config',
            "shopify_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT};\n");
    }
});

no_long_string();
run_tests();

__DATA__

=== TEST 1: a topic the product does not handle: 200, ignored, counted
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
location = /metrics {
    shopify_status;
}
--- request eval
[::post(), "GET /metrics"]
--- more_headers eval
[::delivery(1, 'X-Shopify-Topic' => 'carts/create'), ""]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^\{"status":"ignored"\}$/,
 qr/shopify_webhook_deliveries_total\{topic="other",outcome="ignored"\} 1\n/]
--- no_error_log
[error]



=== TEST 2: a topic on the allow-list goes to the stream
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
    shopify_webhook_allow_topics carts/create checkouts/create;
}
--- request eval
::post()
--- more_headers eval
::delivery(2, 'X-Shopify-Topic' => 'checkouts/create')
--- error_code: 200
--- response_body
{"status":"accepted"}
--- no_error_log
[error]



=== TEST 3: the mandatory privacy topics are accepted without a list
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
--- request eval
[::post(), ::post(), ::post()]
--- more_headers eval
[::delivery('3a', 'X-Shopify-Topic' => 'customers/data_request'),
 ::delivery('3b', 'X-Shopify-Topic' => 'customers/redact'),
 ::delivery('3c', 'X-Shopify-Topic' => 'shop/redact')]
--- error_code eval
[200, 200, 200]
--- response_body eval
["{\"status\":\"accepted\"}\n", "{\"status\":\"accepted\"}\n",
 "{\"status\":\"accepted\"}\n"]
--- no_error_log
[error]



=== TEST 4: a privacy topic with a bad signature: 401
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
--- request eval
::post()
--- more_headers eval
::delivery(4, 'X-Shopify-Topic' => 'shop/redact',
           'X-Shopify-Hmac-Sha256' => ::sign('forged'))
--- error_code: 401
--- no_error_log
[error]



=== TEST 5: one event delivered to two subscriptions is enqueued once
Same shop (in any letter case), topic and event id under two webhook ids;
the same event id under another topic is a different event.
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
--- request eval
[::post(), ::post(), ::post()]
--- more_headers eval
[::delivery('5a', 'X-Shopify-Event-Id' => "ev-$::RUN-5"),
 ::delivery('5b', 'X-Shopify-Event-Id' => "ev-$::RUN-5",
            'X-Shopify-Shop-Domain' => 'ACME-Demo.MyShopify.com'),
 ::delivery('5c', 'X-Shopify-Event-Id' => "ev-$::RUN-5",
            'X-Shopify-Topic' => 'orders/updated')]
--- error_code eval
[200, 200, 200]
--- response_body eval
["{\"status\":\"accepted\"}\n", "{\"status\":\"duplicate\"}\n",
 "{\"status\":\"accepted\"}\n"]
--- no_error_log
[error]



=== TEST 5b: a duplicate by event id says so
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
--- request eval
::post()
--- more_headers eval
::delivery('5d', 'X-Shopify-Event-Id' => "ev-$::RUN-5")
--- error_code: 200
--- response_body
{"status":"duplicate"}
--- error_log eval
qr/duplicate delivery t011-\w+-5d of "orders\/create" from "acme-demo.myshopify.com" \(same event id\)/
--- no_error_log
[error]



=== TEST 6: the secret read from a file (first line)
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret file=../html/webhook.secret;
    shopify_webhook_stream t:011:webhooks;
}
--- user_files
>>> webhook.secret
secret-from-a-file
second line is ignored
--- request eval
[::post(), ::post()]
--- more_headers eval
[::delivery('6a', 'X-Shopify-Hmac-Sha256' => ::sign($::BODY,
                                                     'secret-from-a-file')),
 ::delivery('6b')]
--- error_code eval
[200, 401]
--- no_error_log
[error]
secret-from-a-file



=== TEST 7: the secret read from the environment
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret env=SHOPIFY_T011_SECRET;
    shopify_webhook_stream t:011:webhooks;
}
--- request eval
[::post(), ::post()]
--- more_headers eval
[::delivery('7a', 'X-Shopify-Hmac-Sha256' =>
                  ::sign($::BODY, 'secret-from-the-environment')),
 ::delivery('7b')]
--- error_code eval
[200, 401]
--- no_error_log
[error]
secret-from-the-environment



=== TEST 8: the module's variables, here in a response header
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
    add_header X-Trace "$shopify_topic|$shopify_shop|$shopify_webhook_id|$shopify_outcome" always;
    add_header X-Entry $shopify_entry_id always;
}
--- request eval
::post()
--- more_headers eval
::delivery(8)
--- error_code: 200
--- response_headers eval
"X-Trace: orders/create|acme-demo.myshopify.com|t011-$::RUN-8|accepted"
--- response_headers_like
X-Entry: \d+-\d+
--- no_error_log
[error]



=== TEST 9: every counter moves by what was sent
--- config
location = /webhooks/shopify {
    client_max_body_size 64;
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
location = /metrics {
    shopify_status;
}
--- request eval
[::post(), ::post(), ::post(), ::post(), "GET /webhooks/shopify",
 "POST /webhooks/shopify\n" . ('x' x 100), "GET /metrics"]
--- more_headers eval
[::delivery(9), ::delivery(9),
 ::delivery('9b', 'X-Shopify-Hmac-Sha256' => ::sign('forged')),
 ::delivery('9c', 'X-Shopify-API-Version' => undef), "", "", ""]
--- error_code eval
[200, 200, 401, 400, 405, 413, 200]
--- response_body_like eval
[qr/accepted/, qr/duplicate/, qr/invalid signature/, qr/malformed/,
 qr/method not allowed/, qr/413/,
 qr/\A(?=.*\Qtopic="orders\/create",outcome="accepted"} 1\E\n)
       (?=.*\Qtopic="orders\/create",outcome="duplicate"} 1\E\n)
       (?=.*\Qtopic="unverified",outcome="bad_signature"} 1\E\n)
       (?=.*\Qtopic="unverified",outcome="bad_request"} 1\E\n)
       (?=.*\Qtopic="unverified",outcome="not_allowed"} 1\E\n)
       (?=.*\Qtopic="unverified",outcome="too_large"} 1\E\n)
       (?=.*\Qtopic="orders\/create",outcome="unavailable"} 0\E\n)
       (?=.*^shopify_webhook_enqueue_seconds_count\ 2$)
       (?=.*\Qshopify_webhook_enqueue_seconds_bucket{le="+Inf"} 2\E\n)
       (?=.*^shopify_redis_connected_workers\ 1$)
       (?=.*^shopify_intake_start_time_seconds\ \d{10}$)/msx]
--- no_error_log
[alert]



=== TEST 10: Redis down is counted as unavailable
--- http_config
shopify_redis 127.0.0.1:9;
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:011:webhooks;
}
location = /metrics {
    shopify_status;
}
--- request eval
[::post(), "GET /metrics"]
--- more_headers eval
[::delivery(10), ""]
--- error_code eval
[503, 200]
--- response_body_like eval
[qr/queue unavailable/,
 qr/\A(?=.*\Qtopic="orders\/create",outcome="unavailable"} 1\E\n)
       (?=.*^shopify_redis_connected_workers\ 0$)/msx]


# Several nginx workers: the counters are one set, whichever worker
# answers the scrape.

use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256_base64);

$ENV{TEST_NGINX_REDIS_PORT} ||= 6379;

our $RUN = sprintf '%x%x', time, $$;
our $BODY = '{"id":2,"note":"several workers"}';

sub delivery {
    my ($id) = @_;
    my $mac = hmac_sha256_base64($BODY,
                                 'fixture-webhook-secret-not-a-real-key');
    $mac .= '=' x ((4 - length($mac) % 4) % 4);
    return "X-Shopify-Hmac-Sha256: $mac\n"
         . "X-Shopify-Topic: orders/create\n"
         . "X-Shopify-Shop-Domain: acme-demo.myshopify.com\n"
         . "X-Shopify-API-Version: 2024-04\n"
         . "X-Shopify-Webhook-Id: t012-$RUN-$id\n";
}

master_on();
workers(2);
no_long_string();
run_tests();

__DATA__

=== TEST 1: deliveries on separate connections are all counted
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:012:webhooks;
}
location = /metrics {
    shopify_status;
}
--- init
select undef, undef, undef, 0.3;
--- request eval
[(map { "POST /webhooks/shopify\n$::BODY" } 1 .. 6), "GET /metrics"]
--- more_headers eval
[(map { ::delivery($_) } 1 .. 6), ""]
--- error_code eval
[(200) x 7]
--- response_body_like eval
[(qr/accepted/) x 6,
 qr/\A(?=.*\Qtopic="orders\/create",outcome="accepted"} 6\E\n)
       (?=.*^shopify_redis_connected_workers\ 2$)/msx]
--- no_error_log
[error]



=== TEST 2: after a reload the gauge counts the new workers' connections
A retiring worker held past the reload by a half-sent delivery leaves
only once both new workers are connected: its exit must not take a new
worker's place in shopify_redis_connected_workers.
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
location = /webhooks/shopify {
    shopify_webhook;
    shopify_webhook_secret fixture-webhook-secret-not-a-real-key;
    shopify_webhook_stream t:012:webhooks;
}
location = /metrics {
    shopify_status;
}
--- init
use IO::Socket::INET;
my $count = sub {
    my ($re) = @_;
    my $n = () = Test::Nginx::Util::block_log_tail(1_000_000) =~ /$re/g;
    return $n;
};
my $wait = sub {
    my ($what, $cond) = @_;
    for (1 .. 600) {
        return if $cond->();
        select undef, undef, undef, 0.05;
    }
    die "timed out waiting for $what";
};
$wait->('both workers on redis',
        sub { $count->(qr/connected to redis/) >= 2 });
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                              PeerPort => Test::Nginx::Util::server_port())
    or die "connect: $!";
print {$s} "POST /webhooks/shopify HTTP/1.1\r\nHost: localhost\r\n"
           . "Content-Length: 10\r\n\r\nabc";
select undef, undef, undef, 0.3;
kill 'HUP', Test::Nginx::Util::nginx_pid() or die "cannot signal nginx";
$wait->('the new workers on redis',
        sub { $count->(qr/connected to redis/) >= 4 });
close $s;
$wait->('the old workers gone',
        sub { $count->(qr/worker process \d+ exited/) >= 2 });
--- request
GET /metrics
--- error_code: 200
--- response_body_like eval
qr/^shopify_redis_connected_workers 2$/m
--- no_error_log
[error]

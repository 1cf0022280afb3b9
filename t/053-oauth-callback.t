# The install callback past its hostile-input checks, with a stub token
# endpoint (an internal location that checks the exchange's form and
# answers as Shopify does): a client-secret rotation (callbacks and
# install links signed with the old secret, cookies issued before it, the
# exchange with the new one), scopes that imply others, and an entry Redis
# does not take at once (tried again, then given up with a clear page).

use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex);
use File::Temp qw(tempdir);
use POSIX ();
use ShopifyBC::Test qw(redis redis_port slowdown);

$ENV{TEST_NGINX_REDIS_PORT} ||= 6379;

our $APP = 't053-client';
our $NEW = 't053-new-secret';
our $OLD = 't053-old-secret';
our $RUN = sprintf '%08x%08x', time, $$;
our $STREAM = "t:053:$RUN";
our $SHOP = 'acme-demo.myshopify.com';

# cookie keys as nginx derives them from each client secret
our %STATE_KEY = map { $_ => hmac_sha256('shopify-bc oauth state cookie v1', $_) }
                 $NEW, $OLD;

our $WINDOW = slowdown() > 1 ? 7200 : 90;
$ENV{TEST_NGINX_T053_WINDOW} = "${WINDOW}s";
$ENV{TEST_NGINX_T053_STREAM} = $STREAM;

my $tmp = tempdir(CLEANUP => 1);
open my $kf, '>', "$tmp/key" or die $!;
print $kf join('', map { sprintf '%02x', $_ * 5 % 256 } 1 .. 32), "\n";
close $kf;
$ENV{TEST_NGINX_T053_KEY} = "$tmp/key";

# a state of its own for each callback: a used one stays used
sub state_n { return sprintf '%s%016x', $RUN, $_[0] }

sub esc {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

sub signable {
    my @pairs = @_;
    my %single;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        next if $k eq 'hmac' || $k eq 'signature';
        $single{$k} = $v;
    }
    my @items = map {
        (my $k = $_) =~ s/([%&=])/sprintf '%%%02X', ord $1/ge;
        (my $v = $single{$_}) =~ s/([%&])/sprintf '%%%02X', ord $1/ge;
        "$k=$v";
    } keys %single;
    return join '&', sort @items;
}

sub signed {
    my ($secret, @pairs) = @_;
    my $mac = hmac_sha256_hex(signable(@pairs), $secret);
    my @q;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        push @q, esc($k) . '=' . esc($v);
    }
    return join '&', @q, "hmac=$mac";
}

sub callback {
    my (%o) = @_;
    return "GET /oauth/callback?" . signed($o{secret} // $NEW,
        code => 'c0de' . $o{state},
        host => 'YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYWNtZS1kZW1v',
        shop => $o{shop} // $SHOP,
        state => $o{state},
        timestamp => time);
}

sub cookie {
    my (%o) = @_;
    my $shop = $o{shop} // $SHOP;
    my $exp = time + 600;
    my $mac = hmac_sha256_hex("v1.$o{state}.$exp.$shop",
                              $STATE_KEY{ $o{secret} // $NEW });
    return "Cookie: __Host-shopify_oauth=v1.$o{state}.$exp.$mac.$shop\n";
}

# the stream key made a plain string: the entry's XADD fails (WRONGTYPE)
# until the key is deleted, $after seconds later (never when undef)
sub break_stream {
    my ($key, $after) = @_;
    redis('DEL', $key);
    redis('SET', $key, 'not a stream');
    return unless defined $after;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        select undef, undef, undef, $after;
        exec('redis-cli', '-p', redis_port(), 'DEL', $key) or POSIX::_exit(1);
    }
}


add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('http_config', <<'CONF') unless defined $block->http_config;
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted { default read_orders; }
CONF

    # Shopify's token endpoint, as far as the callback can tell: the form
    # must carry the client id, the current secret, the code and
    # expiring=1
    $block->set_value('config', <<'CONF') unless defined $block->config;
location = /oauth/install {
    shopify_oauth_install;
    shopify_oauth_redirect_uri https://app.example/oauth/callback;
}
location = /oauth/callback { shopify_oauth_callback; }
location = /_shopify_oauth_token {
    internal;
    default_type application/json;
    if ($request_body !~ "^client_id=t053-client&client_secret=t053-new-secret&code=c0de[0-9a-f]{32}&expiring=1$") {
        return 400 '{"error":"invalid_client"}';
    }
    return 200 '{"access_token":"shpat_t053stub","scope":"$t053_granted","expires_in":3599,"refresh_token":"shprt_t053stub","refresh_token_expires_in":7776000}';
}
CONF
});

no_shuffle();
no_long_string();
run_tests();

END {
    redis('DEL', $STREAM, "$STREAM:dead") if $STREAM;
}

__DATA__

=== TEST 1: a callback with a good cookie: exchanged with the current secret, installed
--- request eval
::callback(state => ::state_n(1))
--- more_headers eval
::cookie(state => ::state_n(1))
--- error_code: 200
--- response_body_like eval
qr/acme-demo\.myshopify\.com is installed\./
--- error_log
"acme-demo.myshopify.com" installed, entry
--- no_error_log
[error]
[warn]



=== TEST 2: rotation: a callback signed with the previous secret is accepted, the exchange uses the first
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_client_secret t053-old-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted { default read_orders; }
--- request eval
::callback(state => ::state_n(2), secret => $::OLD)
--- more_headers eval
::cookie(state => ::state_n(2))
--- error_code: 200
--- response_body_like eval
qr/is installed\./
--- error_log
query signature matched client secret #2, not the first one
--- no_error_log
[error]



=== TEST 3: rotation: an install cookie issued under the previous secret still binds its state
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_client_secret t053-old-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted { default read_orders; }
--- request eval
::callback(state => ::state_n(3))
--- more_headers eval
::cookie(state => ::state_n(3), secret => $::OLD)
--- error_code: 200
--- response_body_like eval
qr/is installed\./
--- no_error_log
[error]
[warn]



=== TEST 4: rotation: a callback signed with neither secret is still forged (401)
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_client_secret t053-old-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted { default read_orders; }
--- request eval
[::callback(state => ::state_n(4), secret => 'a-guessed-secret')]
--- more_headers eval
[::cookie(state => ::state_n(4))]
--- error_code eval
[401]
--- response_body_like eval
[qr/Invalid signature/]
--- error_log
query signature does not match
--- no_error_log
[error]



=== TEST 5: without the rotation, the previous secret's signature is refused
--- request eval
[::callback(state => ::state_n(5), secret => $::OLD)]
--- more_headers eval
[::cookie(state => ::state_n(5))]
--- error_code eval
[401]
--- response_body_like eval
[qr/Invalid signature/]
--- no_error_log
[error]



=== TEST 6: rotation: an install link Shopify signed with the previous secret redirects
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_client_secret t053-old-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
--- config
location = /oauth/install {
    shopify_oauth_install;
    shopify_oauth_redirect_uri https://app.example/oauth/callback;
}
--- request eval
"GET /oauth/install?" . ::signed($::OLD, shop => $::SHOP, timestamp => time)
--- error_code: 302
--- response_headers_like
Location: https://acme-demo\.myshopify\.com/admin/oauth/authorize\?client_id=t053-client&.*
--- error_log
query signature matched client secret #2
--- no_error_log
[error]



=== TEST 7: scopes: unauthenticated_write_x covers unauthenticated_read_x, write_x read_x
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_scopes unauthenticated_read_checkouts,read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted {
    default "unauthenticated_write_checkouts,write_orders";
}
--- request eval
::callback(state => ::state_n(7), shop => 'unauth.myshopify.com')
--- more_headers eval
::cookie(state => ::state_n(7), shop => 'unauth.myshopify.com')
--- error_code: 200
--- response_body_like eval
qr/unauth\.myshopify\.com is installed\./
--- no_error_log
[error]
[warn]



=== TEST 8: scopes: a read grant is short of a write request
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_scopes unauthenticated_write_checkouts,read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted {
    default "unauthenticated_read_checkouts,write_orders";
}
--- request eval
::callback(state => ::state_n(8))
--- more_headers eval
::cookie(state => ::state_n(8))
--- error_code: 403
--- response_body_like eval
qr/fewer permissions/
--- error_log
first missing: "unauthenticated_write_checkouts"
--- no_error_log
[error]



=== TEST 9: scopes: an unauthenticated_ grant does not cover the plain scope
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_scopes unauthenticated_write_checkouts,read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
map $shopify_oauth_shop $t053_granted {
    default "unauthenticated_write_checkouts,unauthenticated_write_orders";
}
--- request eval
::callback(state => ::state_n(9))
--- more_headers eval
::cookie(state => ::state_n(9))
--- error_code: 403
--- response_body_like eval
qr/fewer permissions/
--- error_log
first missing: "read_orders"
--- no_error_log
[error]



=== TEST 10: Redis refuses the entry for a second: tried again, then installed
--- init
::break_stream($::STREAM, 1);
--- request eval
::callback(state => ::state_n(10))
--- more_headers eval
::cookie(state => ::state_n(10))
--- timeout: 15
--- error_code: 200
--- response_body_like eval
qr/acme-demo\.myshopify\.com is installed\./
--- error_log
token for "acme-demo.myshopify.com" not stored yet: WRONGTYPE
trying again
"acme-demo.myshopify.com" installed, entry
--- no_error_log
[error]



=== TEST 11: Redis keeps refusing the entry: given up after shopify_oauth_store_timeout, the page says so
--- http_config
shopify_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
shopify_webhook_stream $TEST_NGINX_T053_STREAM:dead;
shopify_oauth_client_id t053-client;
shopify_oauth_client_secret t053-new-secret;
shopify_oauth_scopes read_orders;
shopify_oauth_token_key file=$TEST_NGINX_T053_KEY;
shopify_oauth_timestamp_window $TEST_NGINX_T053_WINDOW;
shopify_oauth_store_timeout 1200ms;
map $shopify_oauth_shop $t053_granted { default read_orders; }
--- init
::break_stream("$::STREAM:dead");
--- request eval
::callback(state => ::state_n(11))
--- more_headers eval
::cookie(state => ::state_n(11))
--- timeout: 15
--- error_code: 503
--- response_body_like eval
qr/Shopify approved the app, but the install could not be recorded here; install the app again\./
--- error_log eval
[qr/token for "acme-demo\.myshopify\.com" obtained but not stored: WRONGTYPE[^;]*; gave up after [3-9] attempts/]

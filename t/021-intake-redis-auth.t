# The intake on a Redis that wants an ACL user and password, in another
# database than 0; and what a wrong password looks like.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use ShopifyBC::Test;

my $run = sprintf '%x%x', time, $$;
my $stream = "t:021:$run";
my $user = "t021-$run";
my $password = "pw-$run";

redis('ACL', 'SETUSER', $user, 'on', ">$password", '~t:021:*', '+@all')
    eq 'OK' or BAIL_OUT('cannot create the ACL user');

my $body = fixture('orders-create-basic.json');

{
    my $ng = start_nginx(stream => $stream,
        redis_options => "db=3 user=$user password=$password");
    is deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-1"), 200,
        'accepted through an ACL user';
    is redis('-n', 3, 'XLEN', $stream), 1, 'the entry is in database 3';
    is redis('-n', 0, 'EXISTS', $stream), 0, 'and not in database 0';
    is deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-1"), 200,
        'a retry';
    is redis('-n', 3, 'XLEN', $stream), 1, 'is deduped in database 3';
}

{
    my $ng = start_nginx(stream => "$stream:bad",
        redis_options => "user=$user password=wrong-password");
    is deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-2"), 503,
        'a wrong password: 503';
    my $log = do { local (@ARGV, $/) = $ng->{error_log}; <> };
    like $log, qr/refused AUTH: WRONGPASS/, 'the error log says why';
    unlike $log, qr/wrong-password/, 'without the password';
    is redis('EXISTS', "$stream:bad"), 0, 'nothing enqueued';
}

# deliveries that arrive while the connection is still being set up
# wait for it, and run only once AUTH and SELECT have succeeded.  Under
# valgrind nginx needs longer to start than the pause lasts: the pause
# and the timeouts stretch with slowdown() (1 otherwise).
{
    my $slow = slowdown();
    redis('CLIENT', 'PAUSE', 1200 * $slow, 'ALL');
    my $ng = start_nginx(stream => $stream, workers => 1, log_level => 'debug',
        redis_connect_timeout => 3 * $slow . 's',
        redis_timeout => 3 * $slow . 's',
        redis_options => "db=3 user=$user password=$password");
    is deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-3"), 200,
        'a delivery during set-up is accepted once Redis is ready';
    my $log = do { local (@ARGV, $/) = $ng->{error_log}; <> };
    like $log, qr/shopify redis command waits for the connection/,
        'it waited for the set-up';
    is redis('-n', 3, 'XLEN', $stream), 2, 'and went to database 3';
}

redis('ACL', 'DELUSER', $user);

done_testing();

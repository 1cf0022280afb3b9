# The intake seen from Redis: what a stream entry holds, racing duplicate
# deliveries, and zero loss across a Redis crash (SIGKILL) and restart.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep);
use ShopifyBC::Test;

my $run = sprintf '%x%x', time, $$;
my $stream = "t:020:$run";

my $nginx = start_nginx(stream => $stream);

# --- a stream entry carries the body byte for byte ----------------------

for my $name (qw(orders-create-basic.json orders-create-unicode.json
                 orders-create-large.json)) {
    my $body = fixture($name);
    my $h = fixture_headers($name);
    my $id = "$run-$name";

    my $status = deliver($nginx, $body,
        'X-Shopify-Webhook-Id' => $id,
        'X-Shopify-Event-Id' => $h->{'X-Shopify-Event-Id'},
        'X-Shopify-Triggered-At' => $h->{'X-Shopify-Triggered-At'});
    is $status, 200, "$name accepted";

    my $entry_id = redis('GET', "$stream:seen:$id");
    like $entry_id, qr/^\d+-\d+$/, "$name: dedupe key holds the entry id";

    my $ttl = redis('TTL', "$stream:seen:$id");
    ok $ttl > 86000 && $ttl <= 86400, "$name: dedupe key expires in 24h";

    # field names and values, in order; the body last
    my @raw = split /\n/, redis('XRANGE', $stream, $entry_id, $entry_id);
    is_deeply [@raw[1, 3, 5, 7, 9, 11, 13, 15]],
        [qw(topic shop webhook_id api_version triggered_at event_id
            received_at body)], "$name: entry fields in order";
    is $raw[2], 'orders/create', "$name: topic";
    is $raw[4], 'acme-demo.myshopify.com', "$name: shop";
    is $raw[6], $id, "$name: webhook id";
    is $raw[8], '2024-04', "$name: api version";
    is $raw[10], $h->{'X-Shopify-Triggered-At'}, "$name: triggered at";
    is $raw[12], $h->{'X-Shopify-Event-Id'}, "$name: event id";
    like $raw[14], qr/^\d{13}$/, "$name: receive time in ms";
    ok abs($raw[14] / 1000 - time) < 60, "$name: receive time is now";

    # redis-cli --raw prints values as they are: compare the bytes
    my $lua = "return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])"
            . "[1][2][16]";
    my $stored = redis('EVAL', $lua, 1, $stream, $entry_id);
    is sha256_hex($stored), sha256_hex($body),
        "$name: body stored byte for byte (" . length($body) . " bytes)";
}

# --- the Shopify-side sender shows the intake's verdict ------------------

{
    my $top = top();
    open my $fh, '-|', 'python3', "$top/sandbox/sandbox.py", 'send',
        '--url', $nginx->{url}, '--secret', $nginx->{secret},
        '--webhook-id', "$run-sender", '--event-id', "$run-sender",
        '--duplicates', 1,
        "$top/fixtures/shopify/orders-create-basic.json" or die $!;
    my $out = do { local $/; <$fh> };
    close $fh;
    like $out, qr/status=200 answer=accepted attempts=1\n/,
        'sender: the first copy is accepted';
    like $out, qr/status=200 answer=duplicate attempts=1 duplicate=1\n/,
        'sender: the second is reported as a duplicate';
}

# --- racing duplicates give one entry -----------------------------------

{
    my $body = fixture('orders-create-discounts.json');
    my $id = "$run-race";
    my $before = redis('XLEN', $stream);
    my @pids;
    pipe my $r, my $w or die $!;
    for my $i (1 .. 16) {
        my $pid = fork // die $!;
        if ($pid == 0) {
            close $r;
            my $s = deliver($nginx, $body, 'X-Shopify-Webhook-Id' => $id);
            print $w "$s\n";
            exit 0;
        }
        push @pids, $pid;
    }
    close $w;
    my @statuses = map { chomp; $_ } <$r>;
    waitpid $_, 0 for @pids;

    is scalar(grep { $_ == 200 } @statuses), 16,
        '16 racing copies of one delivery are all answered 200';
    is redis('XLEN', $stream) - $before, 1, '... and enqueued once';
    like `grep -c 'duplicate delivery $id' $nginx->{error_log}`, qr/^15$/,
        '... 15 logged as duplicates';
}

# --- Redis SIGKILLed under load, then restarted ------------------------
# Four Shopify-like senders deliver continuously and retry whatever is
# not answered 2xx.  Redis is killed mid-stream and restarted on the same
# AOF.  Every delivery must end answered 200 and be in the stream once.

{
    my $port = free_port();
    my $dir = tempdir('redis-XXXX', TMPDIR => 1, CLEANUP => 1);
    my @redis = ('redis-server', '--bind', '127.0.0.1', '--port', $port,
                 '--dir', $dir, '--appendonly', 'yes',
                 '--appendfsync', 'always', '--save', '',
                 '--maxmemory-policy', 'noeviction', '--daemonize', 'yes',
                 '--pidfile', "$dir/redis.pid", '--logfile', "$dir/log");
    my $cli = sub { `redis-cli -p $port --raw @_` };

    system(@redis) == 0 or die 'redis-server did not start';
    wait_until('private redis', 10, sub { $cli->('ping') =~ /PONG/ });

    my $key = "t:020:crash:$run";
    my $ng = start_nginx(stream => $key, redis_port => $port,
                         redis_timeout => '500ms');
    my $body = fixture('orders-create-guest-pos.json');
    my ($senders, $each) = (4, 100);

    pipe my $r, my $w or die $!;
    my @pids;
    for my $c (1 .. $senders) {
        my $pid = fork // die $!;
        if ($pid == 0) {
            close $r;
            for my $i (1 .. $each) {
                my $id = "$run-crash-$c-$i";
                my ($s, $tries) = (0, 0);
                while ($tries++ < 200) {
                    $s = deliver($ng, $body, 'X-Shopify-Webhook-Id' => $id);
                    last if $s == 200;
                    sleep 0.05;
                }
                print $w "$id $s $tries\n";
            }
            exit 0;
        }
        push @pids, $pid;
    }
    close $w;

    # kill while the senders are busy
    wait_until('deliveries under way', 20,
               sub { ($cli->("XLEN $key") || 0) >= 40 });
    my $pid = `cat $dir/redis.pid`;
    chomp $pid;
    kill 'KILL', $pid;                 # no shutdown, no last fsync
    wait_until('redis gone', 5, sub { !kill 0, $pid });
    sleep 1;
    system(@redis) == 0 or die 'redis-server did not restart';

    my (%answered, $retried);
    while (my $line = <$r>) {
        my ($id, $s, $tries) = split ' ', $line;
        $answered{$id} = $s;
        $retried++ if $tries > 1;
    }
    waitpid $_, 0 for @pids;

    my $total = $senders * $each;
    is scalar(grep { $_ == 200 } values %answered), $total,
        "all $total deliveries answered 200 in the end";
    ok $retried, "$retried of them were refused while Redis was down "
        . 'and retried';

    my %count;
    my $lua = "local n = {} for _, e in ipairs(redis.call('XRANGE', "
            . "KEYS[1], '-', '+')) do n[#n + 1] = e[2][6] end return n";
    $count{$_}++ for split /\n/, $cli->("EVAL \"$lua\" 1 $key");
    is scalar(grep { ($count{$_} // 0) == 1 } keys %answered), $total,
        'each of them is in the stream exactly once';
    is scalar(keys %count), $total, 'and nothing else is';

    my $log = do { local (@ARGV, $/) = $ng->{error_log}; <> };
    unlike $log, qr/\[alert\]|exited on signal/, 'no alert, no crash';

    $cli->('shutdown nosave');
}

done_testing();

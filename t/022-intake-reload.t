# nginx -s reload and graceful shutdown under load: no delivery is refused
# because of them, each accepted one is in the stream once, no [alert].

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(sleep);
use ShopifyBC::Test;

my $run = sprintf '%x%x', time, $$;
my $stream = "t:022:$run";
my $ng = start_nginx(stream => $stream, workers => 2);
my $body = fixture('orders-create-basic.json');
my $pidfile = "$ng->{dir}/logs/nginx.pid";
my $master = do { local (@ARGV, $/) = $pidfile; <> };
chomp $master;

my $clients = 4;
my $per_client = 150;

pipe my $r, my $w or die $!;
my @pids;
for my $c (1 .. $clients) {
    my $pid = fork // die $!;
    if ($pid == 0) {
        close $r;
        for my $i (1 .. $per_client) {
            # a new connection each time: a keep-alive connection that a
            # retiring worker closes between requests is not an answer
            my $s = deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-$c-$i",
                            'Connection' => 'close');
            print $w "$c-$i $s\n";
        }
        exit 0;
    }
    push @pids, $pid;
}
close $w;

# three reloads while the clients run
for (1 .. 3) {
    sleep 0.4;
    kill 'HUP', $master or die "cannot signal nginx $master";
}

my %status;
while (my $line = <$r>) {
    my ($id, $s) = split ' ', $line;
    $status{$id} = $s;
}
waitpid $_, 0 for @pids;

my $total = $clients * $per_client;
is scalar(keys %status), $total, "$total deliveries made";
my @bad = grep { $status{$_} != 200 } sort keys %status;
is scalar(@bad), 0, 'every one answered 200 across three reloads'
    or diag("not 200: " . join ', ', map { "$_=$status{$_}" } @bad[0 .. 9]);
is redis('XLEN', $stream), $total, 'each in the stream once';

# graceful shutdown with deliveries in flight
my $pid = fork // die $!;
if ($pid == 0) {
    my @s = map {
        deliver($ng, $body, 'X-Shopify-Webhook-Id' => "$run-quit-$_",
                'Connection' => 'close')
    } 1 .. 50;
    exit((grep { $_ != 200 && $_ != 599 } @s) ? 1 : 0);
}
sleep 0.2;
kill 'QUIT', $master;
waitpid $pid, 0;
is $? >> 8, 0, 'graceful shutdown: no delivery answered non-2xx';
wait_until('nginx gone', 10, sub { !kill 0, $master });

my $log = do { local (@ARGV, $/) = $ng->{error_log}; <> };
my $reloads = () = $log =~ /signal 1 \(SIGHUP\) received/g;
is $reloads, 3, 'the three reloads happened';
unlike $log, qr/\[alert\]/, 'no [alert] in the error log';
unlike $log, qr/\[error\]/, 'no [error] either (a retiring worker loses '
    . 'no connection)';
unlike $log, qr/\[crit\]|exited on signal/, 'no crash';

done_testing();

# nginx.conf.example is a working configuration: nginx -t accepts it with
# the built module, once its paths point at a scratch directory.

use strict;
use warnings;
use lib 't/lib';

use Test::More;
use File::Temp qw(tempdir);
use ShopifyBC::Test;

my $dir = tempdir('conf-XXXX', TMPDIR => 1, CLEANUP => 1);
my $top = top();
my $conf = do { local (@ARGV, $/) = "$top/nginx.conf.example"; <> };

system("openssl req -x509 -newkey rsa:2048 -nodes -days 1"
       . " -subj /CN=connector.example.com -keyout $dir/key.pem"
       . " -out $dir/cert.pem 2>/dev/null") == 0
    or BAIL_OUT('openssl cannot make a certificate');

open my $fh, '>', "$dir/secret" or die $!;
print $fh "a-client-secret\n";
close $fh;

open $fh, '>', "$dir/token.key" or die $!;
print $fh 'ab' x 32, "\n";
close $fh;

my %path = (
    '/usr/lib/nginx/modules/ngx_http_shopify_module.so'
        => "$top/build/nginx/ngx_http_shopify_module.so",
    '/etc/ssl/certs/connector.example.com.pem' => "$dir/cert.pem",
    '/etc/ssl/private/connector.example.com.key' => "$dir/key.pem",
    '/etc/nginx/shopify-client.secret' => "$dir/secret",
    '/etc/nginx/shopify-token.key' => "$dir/token.key",
    '/var/log/nginx/' => "$dir/",
    '/run/nginx.pid' => "$dir/nginx.pid",
);
for my $from (keys %path) {
    my $n = $conf =~ s/\Q$from\E/$path{$from}/g;
    ok $n, "the example names $from";
}

open $fh, '>', "$dir/nginx.conf" or die $!;
print $fh $conf;
close $fh;

my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
my $out = `$bin -t -p $dir/ -c $dir/nginx.conf -e $dir/error.log 2>&1`;
is $?, 0, 'nginx -t accepts nginx.conf.example' or diag($out);
like $out, qr/syntax is ok/, 'syntax is ok';

done_testing();

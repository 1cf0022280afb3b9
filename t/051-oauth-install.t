#!/usr/bin/perl
# The whole install, end to end: nginx's /oauth/install redirects to the
# sandbox's authorize page (HTTPS, test CA), which approves and sends the
# browser back to nginx's /oauth/callback; nginx exchanges the code with
# the sandbox over real, verified HTTPS (the shop's name resolved by the
# stub DNS server) and enqueues one "shopify/installed" entry with the
# tokens encrypted.  No token in any log, in Redis or in its AOF file.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use HTTP::Tiny;
use URI;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Digest::SHA qw(sha256_hex);
use File::Temp qw(tempdir);
use ShopifyBC::Test;

my $APP = 'install-e2e-client';
my $SECRET = 'install-e2e-secret';
my $SHOP = 'acme-demo.myshopify.com';
my $SCOPES = 'read_orders,write_products';
my $KEY = join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
my $STREAM = "oauth-e2e:$$";

my $tmp = tempdir(CLEANUP => 1);
open my $kf, '>', "$tmp/token.key" or die $!;
print $kf "$KEY\n";
close $kf;

my $sb = start_sandbox(https => 1, 'shopify-app' => "$APP:$SECRET:$SCOPES");
my $dns = start_dnsstub();
my $hp = $sb->{https_port};

sub oauth_nginx {
    my ($ca) = @_;
    return start_nginx(
    stream => $STREAM, workers => 1, log_level => 'debug',
    http_extra => <<"CONF",
    shopify_webhook_stream $STREAM;
    shopify_oauth_client_id $APP;
    shopify_oauth_client_secret $SECRET;
    shopify_oauth_scopes $SCOPES;
    shopify_oauth_token_key file=$tmp/token.key;
    shopify_oauth_api_version 2025-07;
CONF
    server_extra => <<"CONF",
        location = /oauth/install {
            shopify_oauth_install;
            shopify_oauth_redirect_uri http://127.0.0.1:\$server_port/oauth/callback;
        }
        location = /oauth/callback { shopify_oauth_callback; }
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
            proxy_ssl_trusted_certificate $ca;
            proxy_connect_timeout 3s;
            proxy_read_timeout 5s;
            subrequest_output_buffer_size 16k;
        }
CONF
    );
}

my $nginx = oauth_nginx($sb->{ca});

my $base = "http://127.0.0.1:$nginx->{port}";
my $http = HTTP::Tiny->new(max_redirect => 0, timeout => 10 * slowdown());

sub cookie_of {
    my ($res) = @_;
    my $sc = $res->{headers}{'set-cookie'} // '';
    $sc = join "\n", @$sc if ref $sc;
    return $sc;
}

# the browser at Shopify: the authorize URL, sent to the sandbox's port
sub authorize {
    my ($location) = @_;
    my $u = URI->new($location);
    my $shop = $u->host;
    my $url = "https://$shop:$hp" . $u->path_query;
    open my $fh, '-|', 'curl', '-sS', '-o', '/dev/null', '-D', '-',
        '--cacert', $sb->{ca}, '--resolve', "$shop:$hp:127.0.0.1", $url
        or die $!;
    my $head = do { local $/; <$fh> };
    close $fh;
    my ($loc) = $head =~ /^location:\s*(\S+)/mi;
    return $loc;
}

my @installed;

subtest 'install -> authorize -> callback -> token stored' => sub {
    my $res = $http->get("$base/oauth/install?shop=$SHOP");
    is($res->{status}, 302, 'install redirects');
    my $loc = URI->new($res->{headers}{location});
    is($loc->scheme . '://' . $loc->host . $loc->path,
       "https://$SHOP/admin/oauth/authorize", "to the shop's authorize page");
    my %q = $loc->query_form;
    is($q{client_id}, $APP, 'client id');
    is($q{scope}, $SCOPES, 'scopes');
    is($q{redirect_uri}, "http://127.0.0.1:$nginx->{port}/oauth/callback",
       'redirect uri');
    like($q{state}, qr/^[0-9a-f]{32}$/, 'a 128-bit state');
    my $sc = cookie_of($res);
    like($sc, qr/^__Host-shopify_oauth=v1\.$q{state}\.\d+\.[0-9a-f]{64}\.\Q$SHOP\E;/,
         'state cookie names the state and the shop');
    like($sc, qr/; HttpOnly/, 'HttpOnly');
    like($sc, qr/; Secure/, 'Secure');
    like($sc, qr/; SameSite=Lax/, 'SameSite=Lax');
    my ($cookie) = $sc =~ /^([^;]+)/;

    my $back = authorize($res->{headers}{location});
    ok($back, 'sandbox approved and sent the browser back');
    my $cb = URI->new($back);
    is($cb->path, '/oauth/callback', 'to the callback');
    my $cbres = $http->get($back, { headers => { Cookie => $cookie } });
    is($cbres->{status}, 200, 'callback answers 200')
        or diag $cbres->{content};
    like($cbres->{content}, qr/\Q$SHOP\E is installed/, 'says the shop is installed');
    like(cookie_of($cbres), qr/__Host-shopify_oauth=; Path=\/; Max-Age=0/, 'cookie cleared');
    push @installed, { cookie => $cookie, callback => $back };

    my $log = shopify_requests()->{value};
    my ($ex) = grep { ($_->{endpoint} // '') eq 'access_token' } @$log;
    ok($ex, 'nginx called the token endpoint');
    is($ex->{sni}, $SHOP, 'with SNI = the shop');
    is($ex->{scheme}, 'https', 'over TLS, certificate verified by nginx');
    is($ex->{expiring}, JSON::PP::true, 'asking for an expiring token');
    is($ex->{outcome}, 'ok', 'and got it');
    ok((grep { $_->{name} eq $SHOP && $_->{type} eq 'A' } @{ dns_queries($dns) }),
       "the shop's name went through the stub resolver");
};

my $entry;

subtest 'the stream entry: interface fields, tokens encrypted' => sub {
    my @flat = split /\n/, redis('XRANGE', $STREAM, '-', '+');
    is(scalar(grep { $_ eq 'shopify/installed' } @flat), 1, 'one shopify/installed entry');
    my (undef, @kv) = @flat;
    my %f = @kv;
    $entry = \%f;
    is($f{topic}, 'shopify/installed', 'topic');
    is($f{shop}, $SHOP, 'shop');
    like($f{webhook_id}, qr/^install-[0-9a-f]{32}$/, 'webhook_id install-<state>');
    is($f{api_version}, '2025-07', 'api_version');
    like($f{triggered_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'triggered_at ISO');
    is($f{event_id}, '', 'event_id empty');
    like($f{received_at}, qr/^\d{13}$/, 'received_at ms');
    my $b = decode_json($f{body});
    is($b->{shop}, $SHOP, 'body shop');
    is($b->{scope}, $SCOPES, 'granted scope');
    is($b->{requested_scope}, $SCOPES, 'requested scope');
    like($b->{access_token}, qr/^v1\.[A-Za-z0-9+\/]+=*$/, 'access token is v1.<base64>');
    like($b->{refresh_token}, qr/^v1\./, 'refresh token too');
    ok($b->{expires_in} > 0 && $b->{refresh_token_expires_in} > 0, 'expiry fields');
    ok(abs($b->{obtained_at} / 1000 - time) < 60, 'obtained_at');
    unlike($f{body}, qr/shp(at|rt)_/, 'no plain token in the entry');

    my $at = decrypt($b->{access_token}, $SHOP);
    my $rt = decrypt($b->{refresh_token}, $SHOP);
    like($at, qr/^shpat_/, 'decrypts to an access token');
    like($rt, qr/^shprt_/, 'decrypts to a refresh token');
    my %live = map { $_->{sha256} => $_ }
               @{ sandbox_call('GET', '/_sandbox/shopify/oauth/tokens')->{value} };
    ok($live{sha256_hex($at)}, 'the very token the sandbox issued');
    ok($live{sha256_hex($rt)}, 'and its refresh token');
    is(decrypt($b->{access_token}, 'other.myshopify.com'), undef,
       'bound to the shop (AAD)');
    $entry->{plain} = [$at, $rt];
};

subtest 'replayed callback: 403, nothing sent' => sub {
    sandbox_call('DELETE', '/_sandbox/shopify/requests');
    my $res = $http->get($installed[0]{callback},
                         { headers => { Cookie => $installed[0]{cookie} } });
    is($res->{status}, 403, 'same callback again: 403');
    like($res->{content}, qr/already used/, 'says so');
    my $log = shopify_requests();
    is(scalar @{ $log->{value} }, 0, 'no request reached Shopify');
    is($log->{connections}, 0, 'no connection either');
    my @flat = split /\n/, redis('XRANGE', $STREAM, '-', '+');
    is(scalar(grep { $_ eq 'shopify/installed' } @flat), 1, 'still one entry');
};

subtest 'granted scopes short of the requested ones: 403, nothing stored' => sub {
    sandbox_call('POST', '/_sandbox/shopify/apps',
                 { client_id => $APP, client_secret => $SECRET,
                   grant_scopes => 'read_orders' });
    my $res = $http->get("$base/oauth/install?shop=short.myshopify.com");
    my ($cookie) = cookie_of($res) =~ /^([^;]+)/;
    my $back = authorize($res->{headers}{location});
    my $cb = $http->get($back, { headers => { Cookie => $cookie } });
    is($cb->{status}, 403, 'refused');
    like($cb->{content}, qr/fewer permissions/, 'says why');
    my @flat = split /\n/, redis('XRANGE', $STREAM, '-', '+');
    ok(!(grep { $_ eq 'short.myshopify.com' } @flat), 'no entry for the shop');
    sandbox_call('POST', '/_sandbox/shopify/apps',
                 { client_id => $APP, client_secret => $SECRET });
};

subtest 'Shopify refuses the code: 502, nothing stored' => sub {
    my $res = $http->get("$base/oauth/install?shop=refused.myshopify.com");
    my ($cookie) = cookie_of($res) =~ /^([^;]+)/;
    my $back = authorize($res->{headers}{location});
    # the code is used up before nginx gets to it
    my %q = URI->new($back)->query_form;
    system('curl', '-sS', '-o', '/dev/null', '--cacert', $sb->{ca},
           '--resolve', "refused.myshopify.com:$hp:127.0.0.1",
           '--data', "client_id=$APP&client_secret=$SECRET&code=$q{code}",
           "https://refused.myshopify.com:$hp/admin/oauth/access_token");
    my $cb = $http->get($back, { headers => { Cookie => $cookie } });
    is($cb->{status}, 502, 'bad gateway');
    my @flat = split /\n/, redis('XRANGE', $STREAM, '-', '+');
    ok(!(grep { $_ eq 'refused.myshopify.com' } @flat), 'no entry');
    like(slurp_file($nginx->{error_log}),
         qr/code exchange for "refused\.myshopify\.com" failed: status 400, error invalid_request/,
         'one log line with Shopify\'s error code');
};

subtest 'a certificate nginx cannot verify: 502, nothing stored' => sub {
    # this nginx trusts the system's CAs only, not the test CA
    my $other = oauth_nginx('/etc/ssl/certs/ca-certificates.crt');
    my $obase = "http://127.0.0.1:$other->{port}";
    my $res = $http->get("$obase/oauth/install?shop=untrusted.myshopify.com");
    my ($cookie) = cookie_of($res) =~ /^([^;]+)/;
    my $back = authorize($res->{headers}{location});
    $back =~ s/127\.0\.0\.1:\d+/127.0.0.1:$other->{port}/;
    sandbox_call('DELETE', '/_sandbox/shopify/requests');
    my $cb = $http->get($back, { headers => { Cookie => $cookie } });
    is($cb->{status}, 502, 'bad gateway');
    # nginx checks the chain once the handshake is done, then hangs up
    my $log = shopify_requests();
    is($log->{connections}, 1, 'nginx connected');
    is_deeply($log->{value}, [], 'and sent nothing: the code never left');
    like(slurp_file($other->{error_log}), qr/upstream SSL certificate verify error/,
         "nginx says why");
    my @flat = split /\n/, redis('XRANGE', $STREAM, '-', '+');
    ok(!(grep { $_ eq 'untrusted.myshopify.com' } @flat), 'no entry');
};

subtest 'the configuration refuses what cannot work' => sub {
    my $so = top() . '/build/nginx/ngx_http_shopify_module.so';
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my $base = "shopify_oauth_client_id a; shopify_oauth_client_secret b;"
             . " shopify_oauth_scopes read_orders;";
    my @cases = (
        [ "$base shopify_oauth_token_key 00112233;",
          qr/takes "env=NAME" or "file=\/path"/, 'a key written inline' ],
        [ "$base shopify_oauth_token_key file=$tmp/short.key;",
          qr/needs 64 hex digits/, 'a key that is not 32 bytes' ],
        [ "$base server { location /c { shopify_oauth_callback; } }",
          qr/needs "shopify_oauth_token_key"/, 'a callback without a key' ],
        [ "$base server { location /i { shopify_oauth_install; } }",
          qr/needs "shopify_oauth_redirect_uri"/, 'an install without a redirect URI' ],
        [ "shopify_oauth_scopes 'read orders';", qr/invalid scopes/, 'a bad scope list' ],
        [ "shopify_oauth_client_id a; shopify_oauth_scopes x;"
          . " server { location /i { shopify_oauth_install;"
          . " shopify_oauth_redirect_uri https://a/cb; } }",
          qr/needs "shopify_oauth_client_id" and "shopify_oauth_client_secret"/,
          'no client secret' ],
    );
    open my $sk, '>', "$tmp/short.key" or die $!;
    print $sk "abcd\n";
    close $sk;
    for my $c (@cases) {
        my ($http_block, $want, $what) = @$c;
        open my $fh, '>', "$tmp/bad.conf" or die $!;
        print $fh "load_module $so; pid $tmp/bad.pid; error_log stderr;"
                . " events {} http { shopify_redis 127.0.0.1:1; $http_block }\n";
        close $fh;
        my $out = `$bin -t -p $tmp/ -c $tmp/bad.conf 2>&1`;
        isnt($?, 0, "nginx -t refuses $what");
        like($out, $want, 'and says why');
    }
};

subtest 'no token text anywhere: error log (debug), access log, Redis, AOF' => sub {
    my ($at, $rt) = @{ $entry->{plain} };
    my %where = (
        'nginx error log' => slurp_file($nginx->{error_log}),
        'nginx access log' => slurp_file("$nginx->{dir}/logs/access.log"),
        'redis keys and values' => join("\n", map { $_ . "\n" . redis('DUMP', $_) }
                                        split /\n/, redis('KEYS', '*')),
    );
    my $dir = redis('CONFIG', 'GET', 'dir');
    my (undef, $rdir) = split /\n/, $dir;
    my @aof = grep { -f } glob("$rdir/appendonlydir/*"), glob("$rdir/*.aof");
    ok(@aof, 'found the AOF file(s)');
    $where{'redis AOF'} = join '', map { slurp_file($_) } @aof;
    ok(length $where{'nginx error log'} > 1000, 'the debug error log is there');
    for my $w (sort keys %where) {
        unlike($where{$w}, qr/\Q$at\E/, "no access token in the $w");
        unlike($where{$w}, qr/\Q$rt\E/, "no refresh token in the $w");
        unlike($where{$w}, qr/\Q$SECRET\E/, "no client secret in the $w");
    }
    like($where{'redis AOF'}, qr/shopify\/installed/, 'the AOF does hold the entry');
};

sub slurp_file {
    my ($p) = @_;
    open my $fh, '<:raw', $p or return '';
    local $/;
    return scalar <$fh>;
}

# AES-256-GCM "v1." format, with the key; undef when it does not verify
sub decrypt {
    my ($v, $aad) = @_;
    my $py = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
    open my $fh, '-|', $py, '-c', <<'PY', $KEY, $v, $aad or die $!;
import base64, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key, v, aad = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
assert v.startswith("v1.")
raw = base64.b64decode(v[3:], validate=True)
try:
    print(AESGCM(key).decrypt(raw[:12], raw[12:], aad).decode())
except Exception:
    sys.exit(3)
PY
    my $out = <$fh>;
    close $fh;
    return undef if $?;
    chomp $out;
    return $out;
}

redis('DEL', $STREAM);
done_testing;

#!/usr/bin/perl
# The sandbox's Shopify OAuth endpoints (sandbox/shopify_oauth.py), over
# its HTTPS listener with the test CA, and the stub DNS server.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use HTTP::Tiny;
use URI;
use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use MIME::Base64 qw(decode_base64);
use IO::Socket::INET;
use ShopifyBC::Test;

my $APP = 'oauth-client';
my $SECRET = 'oauth-secret-for-tests';
my $SHOP = 'acme-demo.myshopify.com';

my $sb = start_sandbox(https => 1, 'shopify-app' => "$APP:$SECRET:read_orders");
my $hp = $sb->{https_port};

# the client verifies the sandbox's certificate with the test CA; the
# shop name reaches it through curl's --resolve (no DNS)
sub shop_req {
    my ($method, $shop, $path, %o) = @_;
    my @cmd = ('curl', '-sS', '--cacert', $sb->{ca},
               '--resolve', "$shop:$hp:127.0.0.1", '-X', $method,
               '-o', '-', '-D', '-', '--max-time', 10);
    push @cmd, '-H', "Content-Type: $o{type}", '--data-binary', $o{body}
        if defined $o{body};
    push @cmd, "https://$shop:$hp$path";
    open my $fh, '-|', @cmd or die "curl: $!";
    my $out = do { local $/; <$fh> };
    close $fh;
    my ($head, $body) = split /\r\n\r\n/, $out, 2;
    my ($status) = $head =~ m{^HTTP/\S+ (\d+)};
    my %h = map { lc($_->[0]) => $_->[1] }
            map { [ /^([^:]+):\s*(.*?)\s*$/ ] } grep { /:/ } split /\r\n/, $head;
    return { status => $status // 0, headers => \%h, body => $body // '' };
}

sub form {
    my (%f) = @_;
    my $u = URI->new('http:');
    $u->query_form(map { ($_ => $f{$_}) } sort keys %f);
    return $u->query;
}

sub token_call {
    my ($shop, %f) = @_;
    my $r = shop_req('POST', $shop, '/admin/oauth/access_token',
                     type => 'application/x-www-form-urlencoded', body => form(%f));
    return ($r->{status}, $r->{body} =~ /^\s*[{\[]/ ? json()->decode($r->{body}) : undef);
}

# the signed string, by the documented rule, from decoded pairs
sub signable {
    my (@pairs) = @_;
    my @items;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        next if $k eq 'hmac' || $k eq 'signature';
        (my $ek = $k) =~ s/([%&=])/sprintf '%%%02X', ord $1/ge;
        (my $ev = $v) =~ s/([%&])/sprintf '%%%02X', ord $1/ge;
        push @items, "$ek=$ev";
    }
    return join '&', sort @items;
}

sub authorize {
    my (%q) = @_;
    my $u = URI->new('http:');
    $u->query_form(%q);
    return shop_req('GET', $SHOP, '/admin/oauth/authorize?' . $u->query);
}

subtest 'authorize: 302 back with a correctly signed query' => sub {
    my $state = 'st&te=%x y';
    my $r = authorize(client_id => $APP, scope => 'read_orders,write_products',
                      redirect_uri => 'https://app.example/oauth/callback',
                      state => $state);
    is($r->{status}, 302, 'redirect');
    my $loc = URI->new($r->{headers}{location});
    is($loc->host, 'app.example', 'to the redirect_uri');
    is($loc->path, '/oauth/callback', 'path kept');
    my @pairs = $loc->query_form;
    my %q = @pairs;
    is_deeply([sort keys %q], [qw(code hmac host shop state timestamp)],
              'code, hmac, host, shop, state, timestamp');
    is($q{shop}, $SHOP, 'shop from the Host header');
    is($q{state}, $state, 'state passed through unchanged');
    like($q{code}, qr/^[0-9a-f]{32}$/, 'a code');
    ok(abs($q{timestamp} - time) < 30, 'timestamp is now');
    (my $host = $q{host}) .= '=' x ((4 - length($q{host}) % 4) % 4);
    is(decode_base64($host), 'admin.shopify.com/store/acme-demo', 'host param');
    is($q{hmac}, hmac_sha256_hex(signable(@pairs), $SECRET),
       'hmac = hex HMAC-SHA256 over sorted, escaped key=value pairs');
    isnt($q{hmac}, hmac_sha256_hex(signable(@pairs), 'other'), 'keyed by the secret');
};

subtest 'authorize: unknown client, bad redirect_uri' => sub {
    my $r = authorize(client_id => 'nobody', scope => 'read_orders',
                      redirect_uri => 'https://app.example/cb', state => 'x');
    is($r->{status}, 400, 'unknown client_id: 400');
    like($r->{body}, qr/Oauth error invalid_request: Could not find Shopify API application/,
         'Shopify-like error page');
    ok(!$r->{headers}{location}, 'no redirect');
    $r = authorize(client_id => $APP, redirect_uri => 'javascript:alert(1)', state => 'x');
    is($r->{status}, 400, 'non-URL redirect_uri: 400');
};

sub fresh_code {
    my (%o) = @_;
    my $r = authorize(client_id => $APP, scope => $o{scope} // 'read_orders',
                      redirect_uri => 'https://app.example/cb', state => 's',
                      %{ $o{extra} || {} });
    my %q = URI->new($r->{headers}{location})->query_form;
    return $q{code};
}

subtest 'code grant: expiring and not, single use, wrong secret, wrong shop' => sub {
    my $code = fresh_code();
    my ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => 'wrong', code => $code);
    is($st, 400, 'wrong secret: 400');
    is($b->{error}, 'invalid_client', 'invalid_client');
    ($st, $b) = token_call('other.myshopify.com', client_id => $APP,
                           client_secret => $SECRET, code => $code);
    is($st, 400, 'code of another shop: 400');
    $code = fresh_code();
    ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => $SECRET, code => $code);
    is($st, 200, 'non-expiring token');
    is_deeply([sort keys %$b], [qw(access_token scope)], 'access_token and scope only');
    is($b->{scope}, 'read_orders', 'granted scope');
    ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => $SECRET, code => $code);
    is($st, 400, 'used code: 400');
    is_deeply($b, { error => 'invalid_request',
                    error_description => 'The authorization code was not found or was already used' },
              'Shopify error body');
    $code = fresh_code(scope => 'read_orders,write_orders');
    ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => $SECRET, code => $code,
                           expiring => 1);
    is($st, 200, 'expiring token');
    is_deeply([sort keys %$b],
              [qw(access_token expires_in refresh_token refresh_token_expires_in scope)],
              'with expiry and refresh token');
    is($b->{scope}, 'read_orders,write_orders', 'scope as requested');
    ok($b->{expires_in} > 3000 && $b->{expires_in} <= 3600, 'about an hour');
    my $chk = sandbox_call('POST', '/_sandbox/shopify/oauth/check', { token => $b->{access_token} });
    is_deeply([$chk->{shop}, $chk->{scopes}], [$SHOP, ['read_orders', 'write_orders']],
              'token_shop knows the token');
    my %known = map { $_->{sha256} => $_ } @{ sandbox_call('GET', '/_sandbox/shopify/oauth/tokens')->{value} };
    ok($known{sha256_hex($b->{access_token})}, 'token list shows its SHA-256');
    ok(!grep({ $_->{sha256} eq $b->{access_token} } values %known), 'never the token');
    # JSON body, as BRIEF's exchange example
    $code = fresh_code();
    my $r = shop_req('POST', $SHOP, '/admin/oauth/access_token', type => 'application/json',
                     body => json()->encode({ client_id => $APP, client_secret => $SECRET,
                                              code => $code, expiring => '1' }));
    is($r->{status}, 200, 'JSON body accepted');
    ok(json()->decode($r->{body})->{refresh_token}, 'and expiring=1 honoured');
};

subtest 'shortfall: the app grants less than asked' => sub {
    sandbox_call('POST', '/_sandbox/shopify/apps',
                 { client_id => 'stingy', client_secret => 's3', grant_scopes => 'read_orders' });
    my $r = shop_req('GET', $SHOP, '/admin/oauth/authorize?client_id=stingy'
                     . '&scope=read_orders,write_orders&redirect_uri=https://a.example/cb&state=q');
    my %q = URI->new($r->{headers}{location})->query_form;
    my ($st, $b) = token_call($SHOP, client_id => 'stingy', client_secret => 's3', code => $q{code});
    is($b->{scope}, 'read_orders', 'granted scope is short of the requested one');
};

sub check { sandbox_call('POST', '/_sandbox/shopify/oauth/check', { token => $_[0] })->{valid} }

subtest 'refresh: rotation, old refresh token valid until the new pair is used' => sub {
    my $code = fresh_code();
    my ($st, $t0) = token_call($SHOP, client_id => $APP, client_secret => $SECRET,
                               code => $code, expiring => 1);
    my %rf = (client_id => $APP, client_secret => $SECRET, grant_type => 'refresh_token');
    my ($s1, $t1) = token_call($SHOP, %rf, refresh_token => $t0->{refresh_token});
    is($s1, 200, 'refresh works');
    isnt($t1->{refresh_token}, $t0->{refresh_token}, 'refresh token rotated');
    isnt($t1->{access_token}, $t0->{access_token}, 'new access token');
    ok($t1->{expires_in} && $t1->{refresh_token_expires_in}, 'expiry fields');
    # the answer was "lost": the old refresh token still works, once more
    my ($s2, $t2) = token_call($SHOP, %rf, refresh_token => $t0->{refresh_token});
    is($s2, 200, 'old refresh token still valid before the new one is used');
    ok(!check($t1->{access_token}), 'the lost pair died');
    my ($s3) = token_call($SHOP, %rf, refresh_token => $t1->{refresh_token});
    is($s3, 400, 'and its refresh token too');
    ok(check($t2->{access_token}), 'first use of the new access token');
    my ($s4, $b4) = token_call($SHOP, %rf, refresh_token => $t0->{refresh_token});
    is($s4, 400, 'now the old refresh token is dead');
    is($b4->{error}, 'invalid_grant', 'invalid_grant');
    # the chain goes on: using the new refresh token kills nothing it needs
    my ($s5, $t5) = token_call($SHOP, %rf, refresh_token => $t2->{refresh_token});
    is($s5, 200, 'next refresh');
    my ($s6) = token_call($SHOP, %rf, refresh_token => $t5->{refresh_token});
    is($s6, 200, 'using the newest refresh token');
    my ($s7) = token_call($SHOP, %rf, refresh_token => $t2->{refresh_token});
    is($s7, 400, 'killed its predecessor');
    my ($s8) = token_call('other.myshopify.com', %rf, refresh_token => $t5->{refresh_token});
    is($s8, 400, 'a refresh token works for its own shop only');
    sandbox_call('POST', '/_sandbox/shopify/oauth/expire', { shop => $SHOP });
    ok(!check($t2->{access_token}), 'expired access token is refused');
};

subtest 'client credentials' => sub {
    my ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => $SECRET,
                              grant_type => 'client_credentials');
    is($st, 200, 'client_credentials grant');
    is_deeply([sort keys %$b], [qw(access_token expires_in scope)], 'fields');
    is($b->{scope}, 'read_orders', "the app's scopes");
    ok(check($b->{access_token}), 'usable');
    ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => 'nope',
                           grant_type => 'client_credentials');
    is($st, 400, 'wrong secret refused');
    ($st, $b) = token_call($SHOP, client_id => $APP, client_secret => $SECRET,
                           grant_type => 'password');
    is($b->{error}, 'unsupported_grant_type', 'unknown grant');
    sandbox_call('POST', '/_sandbox/shopify/oauth/revoke', { shop => $SHOP });
    my $live = grep { $_->{shop} eq $SHOP }
               @{ sandbox_call('GET', '/_sandbox/shopify/oauth/tokens')->{value} };
    is($live, 0, 'revoke drops every token of the shop');
};

subtest 'request log: no secrets, codes or tokens; SNI recorded' => sub {
    my $log = shopify_requests();
    ok(@{ $log->{value} } > 10, 'requests logged');
    my $text = json()->encode($log);
    unlike($text, qr/\Q$SECRET\E/, 'no client secret');
    unlike($text, qr/shp(at|rt|ca)_/, 'no token');
    unlike($text, qr/code=[0-9a-f]{32}/, 'no code');
    my ($tok) = grep { ($_->{endpoint} // '') eq 'access_token' } @{ $log->{value} };
    is($tok->{sni}, $SHOP, 'SNI is the shop');
    is($tok->{scheme}, 'https', 'over TLS');
    ok($log->{connections} > 0, 'connections counted');
    sandbox_call('DELETE', '/_sandbox/shopify/requests');
    $log = shopify_requests();
    is_deeply([$log->{value}, $log->{connections}], [[], 0], 'DELETE empties it');
};

subtest 'stub DNS' => sub {
    my $dns = start_dnsstub();
    my @ans = map { dns_a($dns->{port}, $_) } 'acme-demo.myshopify.com', 'evil.example',
        'myshopify.com.evil.example';
    is($ans[0], '127.0.0.1', 'shop name -> 127.0.0.1');
    is($ans[1], 'NXDOMAIN', 'other names: NXDOMAIN');
    is($ans[2], 'NXDOMAIN', 'suffix tricks: NXDOMAIN');
    my $q = dns_queries($dns);
    is_deeply([map { "$_->{name} $_->{type} $_->{answer}" } @$q],
              ['acme-demo.myshopify.com A 127.0.0.1', 'evil.example A NXDOMAIN',
               'myshopify.com.evil.example A NXDOMAIN'], 'every query logged');
};

# one A query; the answer's address or NXDOMAIN
sub dns_a {
    my ($port, $name) = @_;
    my $s = IO::Socket::INET->new(Proto => 'udp', PeerAddr => "127.0.0.1:$port") or die $!;
    my $q = pack('n6', 0x4242, 0x0100, 1, 0, 0, 0)
          . join('', map { chr(length $_) . $_ } split /\./, $name) . "\0" . pack('n2', 1, 1);
    $s->send($q);
    my $buf = '';
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    select(my $rout = $rin, undef, undef, 5) or return 'timeout';
    $s->recv($buf, 512);
    my ($id, $flags, $qd, $an) = unpack 'n4', $buf;
    return 'NXDOMAIN' if ($flags & 0xF) == 3;
    return 'NODATA' unless $an;
    return join '.', unpack 'C4', substr($buf, -4);
}

done_testing;

#!/usr/bin/perl
# Tests for sandbox/sandbox.py: the offline Business Central API v2.0,
# Microsoft Entra token endpoint and Shopify webhook sender.
# Run from the repository root:  prove t/sandbox.t
use strict;
use warnings;
use Test::More;
use HTTP::Tiny;
use JSON::PP;
use Digest::SHA qw(hmac_sha256_base64);
use MIME::Base64 qw(decode_base64);
use File::Temp qw(tempdir);
use FindBin;
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);

my $ROOT    = "$FindBin::Bin/..";
my $SANDBOX = "$ROOT/sandbox/sandbox.py";
my $PY      = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $TMP     = tempdir(CLEANUP => 1);
my $JSON    = JSON::PP->new->utf8->canonical;
# no proxies: every request here goes to 127.0.0.1
my %NOPROXY = (proxy => undef, http_proxy => undef, https_proxy => undef);
my $HTTP    = HTTP::Tiny->new(timeout => 15, keep_alive => 0, %NOPROXY);

my $USD = '31b7c38b-2d4e-5437-beff-68c052310a74';
my $EUR = 'a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6';
my $WEBHOOK_KEY = 'fixture-webhook-secret-not-a-real-key';
my $SCOPE = 'https://api.businesscentral.dynamics.com/.default';

my @PIDS;

sub start_sandbox {
    my (@args) = @_;
    my $n  = scalar @PIDS;
    my $pf = "$TMP/port.$n";
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDOUT, '>', "$TMP/sandbox.$n.out" or _exit(1);
        open STDERR, '>', "$TMP/sandbox.$n.err" or _exit(1);
        { exec $PY, $SANDBOX, 'serve', '--port', '0', '--port-file', $pf, @args; }
        _exit(127);
    }
    push @PIDS, $pid;
    my $deadline = time + 15;
    while (time < $deadline) {
        if (-s $pf) {
            open my $fh, '<', $pf or die;
            my $port = <$fh>;
            chomp $port;
            my $base = "http://127.0.0.1:$port";
            my $r = $HTTP->get("$base/_sandbox/health");
            return ($base, "$TMP/sandbox.$n.err") if $r->{status} == 200;
        }
        sleep 0.05;
    }
    die "sandbox did not start: " . `cat $TMP/sandbox.$n.err`;
}

END {
    local $?;
    kill 'TERM', @PIDS if @PIDS;
    waitpid($_, 0) for @PIDS;
}

sub jdecode {
    my ($s) = @_;
    return undef unless defined $s && length $s;
    my $v = eval { $JSON->decode($s) };
    return $v;
}

sub get_token {
    my ($base, %over) = @_;
    my %form = (grant_type => 'client_credentials', client_id => 'sandbox-client-id',
                client_secret => 'sandbox-client-secret', scope => $SCOPE, %over);
    my $r = $HTTP->post_form("$base/sandbox-tenant/oauth2/v2.0/token", \%form);
    return ($r->{status}, jdecode($r->{content}), $r);
}

my ($BASE, $ERRLOG) = start_sandbox('--quiet');
my $API = "$BASE/v2.0/sandbox-tenant/production/api/v2.0";
my (undef, $tok0) = get_token($BASE);
my $TOKEN = $tok0->{access_token};

sub bc {
    my ($method, $path, %o) = @_;
    my %h = (Accept => 'application/json');
    $h{Authorization} = "Bearer " . ($o{token} // $TOKEN) unless $o{no_auth};
    %h = (%h, %{ $o{headers} || {} });
    my %req = (headers => \%h);
    if (exists $o{body}) {
        $req{content} = ref $o{body} ? $JSON->encode($o{body}) : $o{body};
        $h{'Content-Type'} = 'application/json';
    }
    my $url = $path =~ m{^https?://} ? $path : "$API/$path";
    $url .= '?' . $HTTP->www_form_urlencode($o{query}) if $o{query};
    my $r = $HTTP->request($method, $url, \%req);
    return ($r->{status}, jdecode($r->{content}), $r);
}

sub control {
    my ($method, $path, $body) = @_;
    my %req = (headers => {'Content-Type' => 'application/json'});
    $req{content} = $JSON->encode($body) if defined $body;
    my $r = $HTTP->request($method, "$BASE/_sandbox/$path", \%req);
    return ($r->{status}, jdecode($r->{content}), $r);
}

sub bc_error_ok {
    my ($status, $json, $want_status, $want_code, $msg_re, $name) = @_;
    subtest $name => sub {
        is($status, $want_status, 'HTTP status');
        is($json && $json->{error} && $json->{error}{code}, $want_code, 'error code');
        like($json && $json->{error} && $json->{error}{message} // '', $msg_re, 'message');
        like($json && $json->{error} && $json->{error}{message} // '',
             qr/  CorrelationId:  [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.$/,
             'message ends with the CorrelationId');
    };
}

sub n_orders {
    my (undef, $j) = control('GET', 'orders');
    return scalar @{ $j->{value} };
}

sub basic_order {
    my (%over) = @_;
    return {
        customerNumber => '10000',
        externalDocumentNumber => 'shopify-1043',
        orderDate => '2026-03-16',
        salesOrderLines => [
            {lineType => 'Item', lineObjectNumber => '1896-S', quantity => 2, unitPrice => 1000.80},
            {lineType => 'Item', lineObjectNumber => '1900-S', quantity => 4, unitPrice => 192.80,
             description => 'PARIS Guest Chair'},
            {lineType => 'Account', lineObjectNumber => '40400', description => 'Standard Shipping',
             quantity => 1, unitPrice => 49.00, taxCode => 'NONTAXABLE'},
        ],
        %over,
    };
}

my $SO = "companies($USD)/salesOrders";

# ---------------------------------------------------------------- Entra
subtest 'token grant' => sub {
    my ($st, $j) = get_token($BASE);
    is($st, 200, 'status 200');
    is($j->{token_type}, 'Bearer', 'token_type Bearer');
    is($j->{expires_in}, 3599, 'expires_in default 3599');
    is($j->{ext_expires_in}, 3599, 'ext_expires_in');
    like($j->{access_token} // '', qr/^\S{40,}$/, 'opaque access token');
    isnt($j->{access_token}, $TOKEN, 'each grant gets a new token');
};

subtest 'token errors have the Entra shape' => sub {
    my ($st, $j) = get_token($BASE, client_secret => 'wrong');
    is($st, 401, 'bad secret: 401');
    is($j->{error}, 'invalid_client', 'bad secret: invalid_client');
    is_deeply($j->{error_codes}, [7000215], 'bad secret: error_codes');
    like($j->{error_description}, qr/^AADSTS7000215: .*\r\nTrace ID: \S+\r\nCorrelation ID: \S+\r\nTimestamp: /s,
         'error_description layout');
    ok($j->{timestamp} && $j->{trace_id} && $j->{correlation_id}, 'timestamp, trace_id, correlation_id');
    ($st, $j) = get_token($BASE, client_id => 'nobody');
    is($st, 400, 'unknown client: 400');
    is($j->{error}, 'unauthorized_client', 'unknown client: unauthorized_client');
    is_deeply($j->{error_codes}, [700016], 'unknown client: AADSTS700016');
    ($st, $j) = get_token($BASE, scope => 'https://api.businesscentral.dynamics.com/Financials.ReadWrite.All');
    is($st, 400, 'bad scope: 400');
    is($j->{error}, 'invalid_scope', 'bad scope: invalid_scope');
    ($st, $j) = get_token($BASE, grant_type => 'password');
    is($st, 400, 'bad grant: 400');
    is($j->{error}, 'unsupported_grant_type', 'bad grant: unsupported_grant_type');
    my $r = $HTTP->post_form("$BASE/other-tenant/oauth2/v2.0/token",
        {grant_type => 'client_credentials', client_id => 'sandbox-client-id',
         client_secret => 'sandbox-client-secret', scope => $SCOPE});
    is($r->{status}, 400, 'unknown tenant: 400');
    is(jdecode($r->{content})->{error}, 'invalid_tenant', 'unknown tenant: invalid_tenant');
};

# ---------------------------------------------------------------- 401
{
    my ($st, $j) = bc('GET', 'companies', no_auth => 1);
    bc_error_ok($st, $j, 401, 'Authentication_InvalidCredentials', qr/^The server has rejected the client credentials\./,
                '401 without a token');
    ($st, $j) = bc('GET', 'companies', token => 'not-a-token');
    bc_error_ok($st, $j, 401, 'Authentication_InvalidCredentials', qr/rejected the client credentials/,
                '401 with an unknown token');
}

subtest 'token expiry (--token-ttl 1)' => sub {
    my ($base2, $err2) = start_sandbox('--token-ttl', '1');
    my ($st, $j) = get_token($base2);
    is($j->{expires_in}, 1, 'expires_in follows --token-ttl');
    my $tok = $j->{access_token};
    my $r = $HTTP->get("$base2/v2.0/sandbox-tenant/production/api/v2.0/companies",
                       {headers => {Authorization => "Bearer $tok"}});
    is($r->{status}, 200, 'fresh token accepted');
    sleep 1.3;
    $r = $HTTP->get("$base2/v2.0/sandbox-tenant/production/api/v2.0/companies",
                    {headers => {Authorization => "Bearer $tok"}});
    is($r->{status}, 401, 'expired token: 401');
    is(jdecode($r->{content})->{error}{code}, 'Authentication_InvalidCredentials', 'expired token: BC code');
    open my $fh, '<', $err2 or die;
    my $log = do { local $/; <$fh> };
    like($log, qr{GET /v2\.0/sandbox-tenant/production/api/v2\.0/companies 200}, 'stderr has one line per request');
    unlike($log, qr/\Q$tok\E/, 'stderr never shows the access token');
    unlike($log, qr/sandbox-client-secret/, 'stderr never shows the client secret');
};

# ---------------------------------------------------------------- companies
subtest 'companies' => sub {
    my ($st, $j) = bc('GET', 'companies');
    is($st, 200, 'status 200');
    like($j->{'@odata.context'}, qr/\$metadata#companies$/, '@odata.context');
    my %by = map { $_->{id} => $_ } @{ $j->{value} };
    is(scalar @{ $j->{value} }, 2, 'two companies');
    is($by{$USD}{name}, 'CRONUS USA, Inc.', 'USD company, fixed id');
    is($by{$EUR}{name}, 'CRONUS DE', 'EUR company, fixed id');
    like($by{$USD}{'@odata.etag'} // '', qr/^W\/"/, 'entities carry @odata.etag');
    ($st, $j) = bc('GET', "companies($USD)/items", query => {'$filter' => "number eq '1896-s'"});
    is(scalar @{ $j->{value} }, 1, 'item lookup by number (Code field, case-normalised)');
    is($j->{value}[0]{unitPrice}, 1000.8, 'item price is a JSON number');
    ($st, $j) = bc('GET', "companies(5e5e5e5e-0000-4000-8000-000000000000)/salesOrders");
    is($st, 404, 'unknown company: 404');
};

# ---------------------------------------------------------------- deep insert
my $first;
subtest 'deep insert creates header and lines with totals' => sub {
    my ($st, $j, $r) = bc('POST', $SO, body => basic_order(externalDocumentNumber => '  shopify-1043 '),
                          query => {'$expand' => 'salesOrderLines'});
    is($st, 201, '201 Created');
    $first = $j;
    like($j->{id} // '', qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'GUID id');
    like($j->{number} // '', qr/^1010\d\d$/, 'CRONUS US order number');
    is($j->{externalDocumentNumber}, 'SHOPIFY-1043', 'externalDocumentNumber trimmed and upper-cased (Code[35])');
    is($j->{customerNumber}, '10000', 'customerNumber');
    is($j->{customerName}, 'Adatum Corporation', 'customerName from the customer');
    is($j->{currencyCode}, 'USD', 'local currency shown as the LCY code');
    is($j->{status}, 'Draft', 'new order is Draft');
    is(sprintf('%.2f', $j->{totalAmountExcludingTax}), '2821.80', 'totalAmountExcludingTax');
    is(sprintf('%.2f', $j->{totalTaxAmount}), '110.91', 'GA sales tax 4 % of the items');
    is(sprintf('%.2f', $j->{totalAmountIncludingTax}), '2932.71', 'totalAmountIncludingTax');
    my @l = @{ $j->{salesOrderLines} || [] };
    is(scalar @l, 3, 'three lines');
    is_deeply([map { $_->{sequence} } @l], [10000, 20000, 30000], 'sequences');
    is(sprintf('%.2f', $l[0]{amountExcludingTax}), '2001.60', 'line amount = quantity x unitPrice');
    is($l[0]{description}, 'ATHENS Desk', 'description defaults to the item');
    is($l[2]{lineType}, 'Account', 'account line');
    is($r->{headers}{etag}, $j->{'@odata.etag'}, 'ETag header = @odata.etag');
    my ($st2, $j2) = bc('GET', "$SO($j->{id})", query => {'$expand' => 'salesOrderLines'});
    is($st2, 200, 'GET by id');
    is(scalar @{ $j2->{salesOrderLines} }, 3, 'lines stored with the header');
    my ($st3, $j3) = bc('GET', "$SO($j->{id})/salesOrderLines");
    is(scalar @{ $j3->{value} }, 3, 'salesOrderLines navigation');
};

subtest 'discounts: line amount = quantity x unitPrice - discountAmount' => sub {
    my ($st, $j) = bc('POST', $SO, query => {'$expand' => 'salesOrderLines'}, body => {
        customerNumber => '20000', externalDocumentNumber => '#1044',
        salesOrderLines => [
            {lineType => 'Item', lineObjectNumber => '1906-S', quantity => 2, unitPrice => 281.40,
             discountAmount => 84.42},
            {lineType => 'Item', lineObjectNumber => '1908-S', quantity => 3, unitPrice => 190.10,
             discountAmount => 134.02},
            {lineType => 'Item', lineObjectNumber => '1928-S', quantity => 5, unitPrice => 54.90,
             discountAmount => 41.18},
            {lineType => 'Account', lineObjectNumber => '40400', quantity => 1, unitPrice => 15,
             discountAmount => 5, description => 'Freight'},
        ]});
    is($st, 201, 'created');
    is(sprintf('%.2f', $j->{totalAmountExcludingTax}), '1157.98', 'fixture #1044 amount excl. tax');
    is(sprintf('%.2f', $j->{salesOrderLines}[1]{amountExcludingTax}), '436.28', 'discounted line');
};

# ---------------------------------------------------------------- $filter
subtest '$filter on externalDocumentNumber' => sub {
    my ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'shopify-1043'"});
    is($st, 200, 'status 200');
    is(scalar @{ $j->{value} }, 1, 'lower-case literal finds the upper-cased value');
    is($j->{value}[0]{id}, $first->{id}, 'the right order');
    ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'shopify-1044'"});
    is(scalar @{ $j->{value} }, 0, 'other value: nothing');
    ($st, $j) = bc('POST', $SO, body => basic_order(externalDocumentNumber => "O'Brien-7"));
    is($st, 201, 'order with a quote in externalDocumentNumber');
    is($j->{externalDocumentNumber}, "O'BRIEN-7", 'stored upper-case');
    ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'o''brien-7'"});
    is($st, 200, 'doubled quote parses');
    is(scalar @{ $j->{value} }, 1, 'doubled quote matches the quote');
    ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'o'brien-7'"});
    is($st, 400, 'an undoubled quote is a syntax error');
    ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'SHOPIFY-1043'",
                                         '$expand' => 'salesOrderLines', '$top' => 1});
    is(scalar @{ $j->{value}[0]{salesOrderLines} }, 3, '$expand on the list');
    ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq '" . ('X' x 36) . "'"});
    is($st, 400, 'filter value longer than Code[35] rejected');
    is($j->{error}{code}, 'Application_FilterErrorException', 'filter length error code');
};

# ---------------------------------------------------------------- validation
subtest 'over-long externalDocumentNumber' => sub {
    my $before = n_orders();
    my $long = '#ACME-EUROPE-WEBSHOP-2026-0000012345-B';    # 38 characters
    my ($st, $j) = bc('POST', $SO, body => basic_order(externalDocumentNumber => $long));
    bc_error_ok($st, $j, 400, 'Application_StringExceededLength',
                qr/^The length of the string is 38, but it must be less than or equal to 35 characters\. Value: \Q$long\E/,
                'Code[35] error');
    is(n_orders(), $before, 'nothing created');
};

subtest 'unknown item, customer, account: error and nothing created' => sub {
    my $before = n_orders();
    my $o = basic_order();
    $o->{salesOrderLines}[1]{lineObjectNumber} = 'NO-SUCH-ITEM';
    my ($st, $j) = bc('POST', $SO, body => $o);
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/^Item does not exist\./, 'unknown item');
    ($st, $j) = bc('POST', $SO, body => basic_order(customerNumber => '99999'));
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/^The sell-to customer cannot be found\./,
                'unknown customerNumber');
    ($st, $j) = bc('POST', $SO, body => basic_order(customerNumber => undef,
                                                    customerId => '11111111-2222-3333-4444-555555555555'));
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/^The sell-to customer cannot be found\./,
                'unknown customerId');
    my $o2 = basic_order();
    delete $o2->{customerNumber};
    ($st, $j) = bc('POST', $SO, body => $o2);
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/customerNumber" or a "customerId" must be provided/,
                'no customer at all');
    my $o3 = basic_order();
    $o3->{salesOrderLines}[2]{lineObjectNumber} = '49999';
    ($st, $j) = bc('POST', $SO, body => $o3);
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/^Account does not exist\./, 'unknown G/L account');
    $o3->{salesOrderLines}[2]{lineObjectNumber} = '40000';
    ($st, $j) = bc('POST', $SO, body => $o3);
    bc_error_ok($st, $j, 400, 'Application_FieldValidationException', qr/Account Type must be equal to 'Posting'/,
                'heading account');
    ($st, $j) = bc('POST', $SO, body => basic_order(bogusField => 1));
    is($st, 400, 'unknown property rejected');
    is(n_orders(), $before, 'nothing created by any of them');
};

# the number texts given to a key in a JSON text, in order
sub raw_numbers {
    my ($text, $key) = @_;
    return [ $text =~ /"\Q$key\E":(-?[0-9][0-9.eE+-]*)/g ];
}

subtest 'money is exact decimal: large amounts are not rounded' => sub {
    # written by hand: Perl would turn the amounts into doubles
    my $body = '{"customerNumber":"10000","externalDocumentNumber":"BIG-1",'
        . '"salesOrderLines":[{"lineType":"Account","lineObjectNumber":"40400",'
        . '"quantity":3,"unitPrice":333333333333333.33,"discountAmount":0.01,'
        . '"taxCode":"NONTAXABLE"},'
        . '{"lineType":"Account","lineObjectNumber":"40400","quantity":1,'
        . '"unitPrice":0.01,"taxCode":"NONTAXABLE"}]}';
    my ($st, $j, $r) = bc('POST', $SO, body => $body,
                          query => {'$expand' => 'salesOrderLines'});
    is($st, 201, 'created');
    my $id = $j->{id};
    my $c = $r->{content};
    is_deeply(raw_numbers($c, 'unitPrice'), ['333333333333333.33', '0.01'],
              'unit prices exact');
    is_deeply(raw_numbers($c, 'amountExcludingTax'),
              ['999999999999999.98', '0.01'], 'line amounts exact');
    is_deeply(raw_numbers($c, 'totalAmountExcludingTax'),
              ['999999999999999.99'], 'order total exact');
    is_deeply(raw_numbers($c, 'quantity'), ['3', '1'], 'quantities as given');
    ($st, $j, $r) = bc('GET', "$SO($id)");
    is_deeply(raw_numbers($r->{content}, 'totalAmountIncludingTax'),
              ['999999999999999.99'], 'exact when read back');
    ($st, $j, $r) = bc('GET', "companies($USD)/items", query => {'$filter' => "number eq '1896-S'"});
    # as in BC's API reference examples ("unitPrice": 1397.3)
    is_deeply(raw_numbers($r->{content}, 'unitPrice'), ['1000.8'], 'item price 1000.8');
    ($st) = bc('DELETE', "$SO($id)");
    is($st, 204, 'deleted again');
};

subtest 'externalDocumentNumber is not unique' => sub {
    my ($st1, $a) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'DUP-1'));
    my ($st2, $b) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'DUP-1'));
    is($st1, 201, 'first');
    is($st2, 201, 'second with the same externalDocumentNumber');
    isnt($a->{number}, $b->{number}, 'different order numbers');
    my ($st, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'DUP-1'"});
    is(scalar @{ $j->{value} }, 2, 'both found');
};

subtest 'EUR company' => sub {
    my ($st, $j) = bc('POST', "companies($EUR)/salesOrders", body => {
        customerNumber => 'WEB', externalDocumentNumber => '#1012', pricesIncludeTax => JSON::PP::true,
        salesOrderLines => [{lineType => 'Item', lineObjectNumber => '1920-S', quantity => 1, unitPrice => 598}]});
    is($st, 201, 'created');
    like($j->{number} // '', qr/^S-ORD1010\d\d$/, 'S-ORD numbering');
    is($j->{currencyCode}, 'EUR', 'local currency EUR');
    is($j->{totalAmountIncludingTax}, 598, 'total');
    ($st, $j) = bc('POST', "companies($EUR)/salesOrders",
                   body => {customerNumber => 'WEB', currencyCode => 'XYZ'});
    is($st, 400, 'unknown currency rejected');
};

subtest 'PATCH needs a current If-Match' => sub {
    my ($st, $j) = bc('PATCH', "$SO($first->{id})", body => {shipToContact => 'Dock 4'});
    bc_error_ok($st, $j, 400, 'BadRequest_InvalidToken', qr/concurrency token/, 'no If-Match');
    ($st, $j) = bc('PATCH', "$SO($first->{id})", body => {shipToContact => 'Dock 4'},
                   headers => {'If-Match' => 'W/"JzE5OzE7MDA7Jw=="'});
    bc_error_ok($st, $j, 409, 'Request_EntityChanged', qr/Another user has already changed the record/, 'stale');
    ($st, $j) = bc('PATCH', "$SO($first->{id})", body => {shipToContact => 'Dock 4'},
                   headers => {'If-Match' => $first->{'@odata.etag'}});
    is($st, 200, 'current ETag: 200');
    is($j->{shipToContact}, 'Dock 4', 'changed');
    isnt($j->{'@odata.etag'}, $first->{'@odata.etag'}, 'new ETag');
};

# ---------------------------------------------------------------- tax
subtest 'US sales tax: rounded once per jurisdiction over the document' => sub {
    # fixture #1044: customer 20000 is in Marietta (GA 4 % + Cobb County 2 %)
    my ($st, $j) = bc('POST', $SO, query => {'$expand' => 'salesOrderLines'}, body => {
        customerNumber => '20000',
        salesOrderLines => [
            {lineType => 'Item', lineObjectNumber => '1906-S', quantity => 2, unitPrice => 281.40,
             discountAmount => 84.42},
            {lineType => 'Item', lineObjectNumber => '1908-S', quantity => 3, unitPrice => 190.10,
             discountAmount => 134.02},
            {lineType => 'Item', lineObjectNumber => '1928-S', quantity => 5, unitPrice => 54.90,
             discountAmount => 41.18},
            {lineType => 'Account', lineObjectNumber => '40400', quantity => 1, unitPrice => 15,
             discountAmount => 5},
        ]});
    is($st, 201, 'created');
    # 1157.98 x 4 % = 46.3192 -> 46.32; x 2 % = 23.1596 -> 23.16 (Shopify, per line: 69.49)
    is(sprintf('%.2f', $j->{totalTaxAmount}), '69.48', 'tax 46.32 + 23.16, not the per-line 69.49');
    is(sprintf('%.2f', $j->{totalAmountIncludingTax}), '1227.46', 'total');
    my $sum = 0;
    $sum += $_->{totalTaxAmount} for @{ $j->{salesOrderLines} };
    is(sprintf('%.2f', $sum), '69.48', 'line taxes add up to the document tax');
    is($j->{salesOrderLines}[0]{taxPercent}, 6, 'line taxPercent: both jurisdictions');
    is($j->{salesOrderLines}[0]{taxCode}, 'FURNITURE', "taxCode defaults to the item's tax group");
    is($j->{salesOrderLines}[3]{taxCode}, 'FREIGHT', "and to the G/L account's");
};

subtest 'taxCode: NONTAXABLE lines carry no tax, unknown codes are refused' => sub {
    my ($st, $j) = bc('POST', $SO, body => {customerNumber => 'WEB', salesOrderLines => [
        {lineType => 'Item', lineObjectNumber => '1928-S', quantity => 2, unitPrice => 54.90,
         taxCode => 'NONTAXABLE'}]});
    is($st, 201, 'created');
    is($j->{totalTaxAmount}, 0, 'no tax');
    ($st, $j) = bc('POST', $SO, body => {customerNumber => 'WEB', salesOrderLines => [
        {lineType => 'Item', lineObjectNumber => '1928-S', quantity => 2, taxCode => 'BOGUS'}]});
    bc_error_ok($st, $j, 400, 'Internal_InvalidTableRelation',
                qr/Tax Group Code of table Sales Line contains a value \(BOGUS\)/, 'unknown tax group');
};

subtest 'prices including tax: VAT company yes, sales tax company no' => sub {
    my ($st, $j) = bc('POST', "companies($EUR)/salesOrders", body => {
        customerNumber => 'WEB', pricesIncludeTax => JSON::PP::true, salesOrderLines => [
            {lineType => 'Item', lineObjectNumber => '1920-S', quantity => 1, unitPrice => 598},
            {lineType => 'Item', lineObjectNumber => '1960-S', quantity => 6, unitPrice => 179},
            {lineType => 'Account', lineObjectNumber => '40400', quantity => 1, unitPrice => 59}]});
    is($st, 201, 'created');
    # 1731.00 - 1731.00 / 1.19 (1454.62) = 276.38, rounded once for the 19 % rate
    is(sprintf('%.2f', $j->{totalTaxAmount}), '276.38', 'VAT out of the gross');
    is(sprintf('%.2f', $j->{totalAmountIncludingTax}), '1731.00', 'total = the gross');
    is(sprintf('%.2f', $j->{totalAmountExcludingTax}), '1454.62', 'net');
    ($st, $j) = bc('POST', $SO, body => basic_order(pricesIncludeTax => JSON::PP::true));
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/Prices Including Tax cannot be used/,
                'refused with US sales tax');
};

subtest 'tax set-up through the control API' => sub {
    my ($st, $j) = control('POST', "tax/$USD", {
        areas => {'SAVANNAH, GA' => [{jurisdiction => 'GA', rates => {FURNITURE => 4}},
                                     {jurisdiction => 'CHATHAM', name => 'Chatham County Tax',
                                      rates => {FURNITURE => 3}}]},
        customers => {'50000' => 'SAVANNAH, GA'}});
    is($st, 200, 'set');
    ($st, $j) = bc('POST', $SO, body => {customerNumber => '50000', salesOrderLines => [
        {lineType => 'Item', lineObjectNumber => '1928-S', quantity => 1, unitPrice => 100}]});
    is(sprintf('%.2f', $j->{totalTaxAmount}), '7.00', 'new area: 4 % + 3 %');
    ($st, $j) = bc('GET', "companies($USD)/taxAreas");
    ok((grep { $_->{code} eq 'SAVANNAH, GA' } @{ $j->{value} }), 'listed in taxAreas');
};

subtest 'POST customers: validated, numbered, with the template' => sub {
    my ($st, $j) = bc('POST', "companies($USD)/customers",
                      body => {displayName => 'Jürgen Größe', email => 'not-an-address'});
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/The email address "not-an-address" is not valid/,
                'bad e-mail');
    ($st, $j) = bc('POST', "companies($USD)/customers", body => {displayName => 'X' x 101});
    bc_error_ok($st, $j, 400, 'Application_StringExceededLength', qr/must be less than or equal to 100/,
                'name over Text[100]');
    ($st, $j) = bc('POST', "companies($USD)/customers", body => {displayName => 'A', phoneNumber => 'call me'});
    bc_error_ok($st, $j, 400, 'Application_DialogException', qr/must not contain letters/, 'letters in phone');
    ($st, $j) = bc('POST', "companies($USD)/customers", body => {displayName => 'A', bogus => 1});
    is($st, 400, 'unknown property');
    ($st, $j) = bc('POST', "companies($USD)/customers", body => {
        displayName => 'Jürgen Größe', type => 'Person', email => 'j.g@example.com', country => 'cn'});
    is($st, 201, 'created');
    like($j->{number}, qr/^C\d{5}$/, 'number from the series');
    is($j->{country}, 'CN', 'Code field upper-cased');
    is($j->{taxAreaDisplayName}, 'ATLANTA, GA', "the template's tax area");
    ($st, $j) = bc('GET', "companies($USD)/customers",
                   query => {'$filter' => q{email eq 'j.g@example.com'}});
    is(scalar @{ $j->{value} }, 1, 'found by e-mail afterwards');
};

subtest 'lines: PATCH with If-Match; a released order refuses changes' => sub {
    my ($st, $o) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'LINES-1'),
                      query => {'$expand' => 'salesOrderLines'});
    my $ln = $o->{salesOrderLines}[0];
    my $path = "$SO($o->{id})/salesOrderLines($ln->{id})";
    my ($st2, $j) = bc('PATCH', $path, body => {quantity => 1});
    bc_error_ok($st2, $j, 400, 'BadRequest_InvalidToken', qr/concurrency token/, 'no If-Match');
    ($st2, $j) = bc('PATCH', $path, body => {quantity => 1}, headers => {'If-Match' => $ln->{'@odata.etag'}});
    is($st2, 200, 'patched');
    is(sprintf('%.2f', $j->{amountExcludingTax}), '1000.80', 'line recalculated');
    ($st2, $j) = bc('PATCH', $path, body => {quantity => 3}, headers => {'If-Match' => $ln->{'@odata.etag'}});
    bc_error_ok($st2, $j, 409, 'Request_EntityChanged', qr/Another user/, 'stale line ETag');
    ($st2, $j) = bc('PATCH', $path, body => {lineObjectNumber => '1900-S'}, headers => {'If-Match' => '*'});
    is($st2, 400, 'the item of a line cannot change');
    ($st2, $j) = bc('GET', "$SO($o->{id})");
    is(sprintf('%.2f', $j->{totalAmountIncludingTax}), '1891.88', 'order total follows: 1772.00 + 49.00 + 4 % of 1772.00');
    control('POST', "companies/$USD/salesOrders/$o->{id}/release");
    ($st2, $j) = bc('PATCH', $path, body => {quantity => 2}, headers => {'If-Match' => '*'});
    bc_error_ok($st2, $j, 400, 'Application_FieldValidationException', qr/Status must be equal to 'Open'/,
                'released: no line change');
    ($st2, $j) = bc('DELETE', "$SO($o->{id})");
    is($st2, 400, 'released: no delete');
};

subtest "lines: the sequence is a line's key: a second line under one is refused (409)" => sub {
    my ($st, $o) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'SEQ-1'),
                      query => {'$expand' => 'salesOrderLines'});
    is($st, 201, 'order created: lines 10000, 20000, 30000');
    my $lines = "$SO($o->{id})/salesOrderLines";
    my %lamp = (lineType => 'Item', lineObjectNumber => '1928-S', quantity => 1, unitPrice => 54.90,
                taxCode => 'NONTAXABLE');
    my ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 50000});
    is($st2, 201, 'a line under a sequence of its own');
    is($j->{sequence}, 50000, 'keeps it');
    ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 50000});
    bc_error_ok($st2, $j, 409, 'Internal_EntityWithSameKeyExists',
                qr/^The Sales Line already exists\. Identification fields and values: Document Type='Order',Document No\.='\Q$o->{number}\E',Line No\.='50000'/,
                'the same sequence again');
    ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 20000});
    bc_error_ok($st2, $j, 409, 'Internal_EntityWithSameKeyExists', qr/Line No\.='20000'/,
                'the sequence of a line BC numbered');
    my (undef, $g) = bc('GET', "$SO($o->{id})", query => {'$expand' => 'salesOrderLines'});
    is_deeply([map { $_->{sequence} } @{ $g->{salesOrderLines} }], [10000, 20000, 30000, 50000],
              'nothing added by the refusals; lines in sequence order');
    is(sprintf('%.2f', $g->{totalAmountIncludingTax}), '2987.61', 'total: 2932.71 + the lamp once');
    ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 40000});
    is($st2, 201, 'a sequence between others');
    ($st2, $j) = bc('POST', $lines, body => \%lamp);
    is($j->{sequence}, 60000, 'without one: BC numbers it after the last');
    (undef, $g) = bc('GET', "$SO($o->{id})", query => {'$expand' => 'salesOrderLines'});
    is_deeply([map { $_->{sequence} } @{ $g->{salesOrderLines} }], [10000, 20000, 30000, 40000, 50000, 60000],
              'sorted by sequence');
    my ($gone) = grep { $_->{sequence} == 50000 } @{ $g->{salesOrderLines} };
    ($st2) = bc('DELETE', "$lines($gone->{id})", headers => {'If-Match' => $gone->{'@odata.etag'}});
    is($st2, 204, 'line 50000 deleted');
    ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 50000});
    is($st2, 201, 'its sequence is free again');
    ($st2, $j) = bc('POST', $lines, body => {%lamp, sequence => 2147483648});
    is($st2, 400, 'beyond BC\'s Integer: refused');
    my $before = n_orders();
    my $twice = basic_order(externalDocumentNumber => 'SEQ-2');
    $twice->{salesOrderLines}[0]{sequence} = 10000;
    $twice->{salesOrderLines}[1]{sequence} = 10000;
    ($st2, $j) = bc('POST', $SO, body => $twice);
    my $would = $o->{number} + 1;
    bc_error_ok($st2, $j, 409, 'Internal_EntityWithSameKeyExists', qr/Document No\.='$would',Line No\.='10000'/,
                'deep insert: two lines under one sequence (named with the number the order would have had)');
    is(n_orders(), $before, 'deep insert: nothing created');
    ($st2, $j) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'SEQ-3'));
    is($j->{number}, $would, 'and the number is not used up');
};

# ---------------------------------------------------------------- posting
subtest 'posting moves the order to salesInvoices and salesShipments' => sub {
    my ($st, $o) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'POST-ME-1'));
    is($st, 201, 'order created');
    my ($pst, $p) = control('POST', "companies/$USD/salesOrders/$o->{id}/post");
    is($pst, 200, 'posted');
    my $f = {'$filter' => "externalDocumentNumber eq 'post-me-1'"};
    my ($s1, $j1) = bc('GET', $SO, query => $f);
    is(scalar @{ $j1->{value} }, 0, 'gone from salesOrders');
    my ($s2, $j2) = bc('GET', "companies($USD)/salesInvoices", query => $f);
    is($s2, 200, 'salesInvoices answers');
    is(scalar @{ $j2->{value} }, 1, 'one posted invoice');
    is($j2->{value}[0]{externalDocumentNumber}, 'POST-ME-1', 'same externalDocumentNumber');
    is($j2->{value}[0]{orderNumber}, $o->{number}, 'invoice points to the order number');
    like($j2->{value}[0]{number}, qr/^1030\d\d$/, 'invoice has its own number');
    is(sprintf('%.2f', $j2->{value}[0]{totalAmountIncludingTax}), '2932.71', 'invoice total');
    my ($s3, $j3) = bc('GET', "companies($USD)/salesShipments", query => $f);
    is(scalar @{ $j3->{value} }, 1, 'one posted shipment');
    like($j3->{value}[0]{number}, qr/^1020\d\d$/, 'shipment has its own number');
    my ($s4) = bc('GET', "$SO($o->{id})");
    is($s4, 404, 'order id no longer found');
    my (undef, $all) = control('GET', 'orders');
    my ($rec) = grep { $_->{order}{id} eq $o->{id} } @{ $all->{value} };
    is($rec && $rec->{state}, 'posted', '/_sandbox/orders still lists it, as posted');
};

# ---------------------------------------------------------------- faults
subtest '429 fault with Retry-After' => sub {
    my ($cs) = control('POST', 'faults', [{path_regex => 'salesOrders', status => 429, retry_after => 3, times => 1}]);
    is($cs, 200, 'rule installed');
    my ($st, $j, $r) = bc('GET', $SO);
    bc_error_ok($st, $j, 429, 'Application_TooManyRequests', qr/Too many requests/, '429 body');
    is($r->{headers}{'retry-after'}, '3', 'Retry-After header');
    ($st) = bc('GET', $SO);
    is($st, 200, 'times => 1: next request is normal');
    control('DELETE', 'faults');
};

subtest 'commit_then_fail creates the order and answers 500' => sub {
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', action => 'commit_then_fail',
                                status => 500, times => 1}]);
    my ($st, $j) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'CTF-1'));
    is($st, 500, 'client sees 500');
    is($j->{error}{code}, 'Internal_ServerError', 'BC-style error body');
    my ($s2, $j2) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'CTF-1'"});
    is(scalar @{ $j2->{value} }, 1, 'but the order exists');
    control('DELETE', 'faults');
};

subtest 'drop and commit_then_drop close the connection without an answer' => sub {
    # POST: HTTP::Tiny retries idempotent methods on a closed connection, so use a POST here
    my $before = n_orders();
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', action => 'drop', times => 1}]);
    my ($st) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'DROP-1'));
    is($st, 599, 'drop: no HTTP answer (HTTP::Tiny reports 599)');
    is(n_orders(), $before, 'drop: nothing created');
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', action => 'commit_then_drop',
                                times => 1}]);
    ($st) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'DROP-2'));
    is($st, 599, 'commit_then_drop: no HTTP answer');
    my (undef, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'DROP-2'"});
    is(scalar @{ $j->{value} }, 1, 'commit_then_drop: the order exists');
    ($st) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'DROP-3'));
    is($st, 201, 'rules used up: next one answered');
    control('DELETE', 'faults');
};

subtest 'commit_then_hold answers 201 only after the hold' => sub {
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', action => 'commit_then_hold',
                                hold_ms => 700, times => 1}]);
    my $t0 = time;
    my ($st) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'HOLD-1'));
    my $took = time - $t0;
    is($st, 201, '201 after the hold');
    cmp_ok($took, '>=', 0.65, 'answer held back');
    control('DELETE', 'faults');
};

subtest 'probability: a seeded share of the matching requests' => sub {
    my $rule = {path_regex => 'companies$', status => 503, probability => 0.3, seed => 42};
    my @runs;
    for my $round (1 .. 2) {
        control('POST', 'faults', [$rule]);
        push @runs, join '', map { (bc('GET', 'companies'))[0] == 503 ? 'x' : '.' } 1 .. 100;
        my (undef, $f) = control('GET', 'faults');
        my $hit = () = $runs[-1] =~ /x/g;
        is($f->{value}[0]{applied}, $hit, "round $round: applied counts the hits");
        is($f->{value}[0]{spared}, 100 - $hit, "round $round: spared counts the others");
    }
    my $hit = () = $runs[0] =~ /x/g;
    ok($hit > 10 && $hit < 60, "about 30 % hit ($hit of 100)");
    is($runs[1], $runs[0], 'the same seed hits the same requests');
    my ($st) = bc('GET', "$SO?\$top=1");
    is($st, 200, 'a request the regex does not match is not drawn for');

    # a request the first rule spares goes on to the next one
    control('POST', 'faults', [{path_regex => 'companies$', status => 500, probability => 0.5, seed => 7},
                               {path_regex => 'companies$', status => 503}]);
    my %st;
    $st{ (bc('GET', 'companies'))[0] }++ for 1 .. 40;
    ok($st{500} && $st{503} && $st{500} + $st{503} == 40,
       "every request hit by one of the two rules (500: " . ($st{500} // 0) . ", 503: " . ($st{503} // 0) . ')');
    my ($cs, $j) = control('POST', 'faults', [{status => 500, probability => 1.5}]);
    is($cs, 400, 'a probability above 1 is refused');
    ($cs) = control('POST', 'faults', [{status => 500, probability => 0.5, seed => 'x'}]);
    is($cs, 400, 'a seed that is not an integer is refused');
    control('DELETE', 'faults');
};

subtest 'a POST whose client gave up is still carried out, within the execution limit' => sub {
    my $impatient = HTTP::Tiny->new(timeout => 0.3, keep_alive => 0, %NOPROXY);
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', latency_ms => 800, times => 1}]);
    my $r = $impatient->request('POST', "$API/$SO", {
        headers => {Authorization => "Bearer $TOKEN", 'Content-Type' => 'application/json'},
        content => $JSON->encode(basic_order(externalDocumentNumber => 'LATE-1'))});
    is($r->{status}, 599, 'the client timed out');
    my $found = 0;
    for (1 .. 50) {
        my (undef, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'LATE-1'"});
        $found = scalar @{ $j->{value} };
        last if $found;
        sleep 0.1;
    }
    is($found, 1, 'the order was created after the client had gone');

    my ($cs, $cfg) = control('POST', 'config', {max_execution_ms => 300});
    is($cfg->{max_execution_ms}, 300, 'max_execution_ms set');
    control('POST', 'faults', [{method => 'POST', path_regex => 'salesOrders$', latency_ms => 600, times => 1}]);
    my ($st, $j) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'LATE-2'));
    bc_error_ok($st, $j, 504, 'Internal_ServerError', qr/maximum execution time/, 'over the limit: 504');
    (undef, $j) = bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'LATE-2'"});
    is(scalar @{ $j->{value} }, 0, 'and nothing created');
    ($st) = bc('POST', $SO, body => basic_order(externalDocumentNumber => 'LATE-3'));
    is($st, 201, 'within the limit: created');
    ($cs) = control('POST', 'config', {max_execution_ms => 0});
    is($cs, 400, 'max_execution_ms 0 is refused');
    control('POST', 'config', {max_execution_ms => 600000});
    control('DELETE', 'faults');
};

# ---------------------------------------------------------------- request log
subtest 'request log' => sub {
    control('DELETE', 'requests');
    bc('GET', 'companies');
    bc('GET', $SO, query => {'$filter' => "externalDocumentNumber eq 'X'"});
    bc('GET', 'companies', no_auth => 1);
    my ($st, $j) = control('GET', 'requests');
    is($st, 200, 'status 200');
    my @v = @{ $j->{value} };
    is(scalar @v, 3, 'three BC calls logged, control calls not');
    is_deeply([map { $_->{status} } @v], [200, 200, 401], 'answered statuses');
    is($v[1]{method}, 'GET', 'method');
    like($v[1]{path}, qr{/companies\($USD\)/salesOrders$}, 'path');
    is($v[1]{params}{'$filter'}, "externalDocumentNumber eq 'X'", 'query parameters');
    ok($v[1]{time}, 'time');
    is($v[0]{client}, 'sandbox-client-id', 'principal recorded');
    ok(!grep({ ($_->{query} // '') =~ /\Q$TOKEN\E/ } @v), 'no token in the log');

    # a call whose answer the client has is in the log already (it was once written after the answer)
    my $late = 0;
    for my $i (1 .. 40) {
        control('DELETE', 'requests');
        bc('GET', 'companies', no_auth => 1);
        my (undef, $r) = control('GET', 'requests');
        $late++ unless @{ $r->{value} } == 1 && $r->{value}[0]{status} == 401;
    }
    is($late, 0, 'every answered call already logged when its answer arrives');
};

# ---------------------------------------------------------------- limits
subtest 'concurrency: 5-style limit with a queue, 429 beyond it' => sub {
    control('POST', 'reset');
    control('POST', 'config', {latency_ms => 800, max_concurrent => 2, max_queue => 1});
    my $n = 5;
    my $go = time + 0.4;
    my @kids;
    for my $i (1 .. $n) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            my $h = HTTP::Tiny->new(timeout => 10, keep_alive => 0, %NOPROXY);
            sleep($go - time) if $go > time;
            my $r = $h->get("$API/companies", {headers => {Authorization => "Bearer $TOKEN"}});
            open my $fh, '>', "$TMP/kid.$i" or _exit(1);
            print $fh "$r->{status} " . ($r->{headers}{'retry-after'} // '-') . "\n";
            close $fh;
            _exit(0);
        }
        push @kids, $pid;
    }
    waitpid($_, 0) for @kids;
    my @res = map { open my $fh, '<', "$TMP/kid.$_" or die; my $l = <$fh>; chomp $l; [split / /, $l] } 1 .. $n;
    my $ok  = grep { $_->[0] == 200 } @res;
    my $rej = grep { $_->[0] == 429 } @res;
    is($ok, 3, '2 processed + 1 queued succeed');
    is($rej, 2, 'the rest get 429');
    ok(!grep({ $_->[0] == 429 && $_->[1] eq '-' } @res), '429 answers carry Retry-After');
    my (undef, $s) = control('GET', 'stats');
    is($s->{principals}{'sandbox-client-id'}{peakActive}, 2, 'never more than 2 processed at once');
    control('POST', 'reset');
};

subtest 'rate window' => sub {
    control('POST', 'reset');
    control('POST', 'config', {rate_limit => 3, rate_window_s => 1.5});
    my @st = map { (bc('GET', 'companies'))[0] } 1 .. 3;
    is_deeply(\@st, [200, 200, 200], 'within the budget');
    my ($st, $j, $r) = bc('GET', 'companies');
    is($st, 429, 'over the budget: 429');
    is($j->{error}{code}, 'Application_TooManyRequests', 'code');
    like($r->{headers}{'retry-after'} // '', qr/^[12]$/, 'Retry-After until the window frees up');
    sleep 1.6;
    ($st) = bc('GET', 'companies');
    is($st, 200, 'after the window: accepted again');
    control('POST', 'reset');
};

subtest 'reset drops orders, faults and the log' => sub {
    bc('POST', $SO, body => basic_order(externalDocumentNumber => 'BEFORE-RESET'));
    control('POST', 'faults', [{path_regex => 'nothing-matches-this', status => 500}]);
    ok(n_orders() > 0, 'orders exist before');
    my ($st) = control('POST', 'reset');
    is($st, 200, 'reset');
    is(n_orders(), 0, 'no orders after');
    my (undef, $f) = control('GET', 'faults');
    is(scalar @{ $f->{value} }, 0, 'no faults after');
    my (undef, $l) = control('GET', 'requests');
    is(scalar @{ $l->{value} }, 0, 'empty request log after');
    my ($s2, $j) = bc('POST', $SO, body => basic_order());
    is($j->{number}, '101001', 'number series starts again');
    my ($s3, $items) = bc('GET', "companies($USD)/items");
    is(scalar @{ $items->{value} }, 22, 'seed data still there (22 items)');
};

subtest '--state-file survives a restart' => sub {
    my $state = "$TMP/state.json";
    my ($b, undef) = start_sandbox('--quiet', '--state-file', $state);
    my $pid = $PIDS[-1];
    my (undef, $t) = get_token($b);
    my $api = "$b/v2.0/sandbox-tenant/production/api/v2.0/companies($USD)/salesOrders";
    my $r = $HTTP->post($api, {headers => {Authorization => "Bearer $t->{access_token}",
                                           'Content-Type' => 'application/json'},
                               content => $JSON->encode(basic_order(externalDocumentNumber => 'KEEP-ME'))});
    is($r->{status}, 201, 'order created');
    kill 'TERM', $pid;
    waitpid($pid, 0);
    ok(-s $state, 'state written on SIGTERM');
    my ($b2, undef) = start_sandbox('--quiet', '--state-file', $state);
    $r = $HTTP->get("$b2/v2.0/sandbox-tenant/production/api/v2.0/companies($USD)/salesOrders?"
                    . $HTTP->www_form_urlencode({'$filter' => "externalDocumentNumber eq 'KEEP-ME'"}),
                    {headers => {Authorization => "Bearer $t->{access_token}"}});
    is($r->{status}, 200, 'token issued before the restart still valid');
    is(scalar @{ jdecode($r->{content})->{value} }, 1, 'order still there');
};

# ---------------------------------------------------------------- Shopify sender
my $BASIC = "$ROOT/fixtures/shopify/orders-create-basic.json";
my $META  = $JSON->decode(do { local $/; open my $fh, '<', "$ROOT/fixtures/meta/webhook-headers.json" or die; <$fh> });
my $BASIC_META = $META->{headers}{'orders-create-basic.json'};

sub run_cmd {
    my (@cmd) = @_;
    my $pid = open(my $fh, '-|');
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        { exec @cmd; }
        _exit(127);
    }
    my $out = do { local $/; <$fh> };
    close $fh;
    return ($? >> 8, $out);
}

sub echo_headers {
    my ($d) = @_;
    my %h;
    $h{lc $_->[0]} = $_->[1] for @{ $d->{headers} };
    return \%h;
}

subtest 'sign' => sub {
    my ($rc, $out) = run_cmd($PY, $SANDBOX, 'sign', '--secret', $WEBHOOK_KEY, $BASIC);
    is($rc, 0, 'exit 0');
    chomp $out;
    is($out, $BASIC_META->{'X-Shopify-Hmac-Sha256'}, 'same HMAC as the fixture metadata');
};

subtest 'send: signed delivery with the fixture headers' => sub {
    control('DELETE', 'echo');
    my ($rc, $out) = run_cmd($PY, $SANDBOX, 'send', '--url', "$BASE/_sandbox/echo", '--secret', $WEBHOOK_KEY,
                             '--retries', '0', $BASIC);
    is($rc, 0, 'exit 0');
    like($out, qr/^orders-create-basic\.json webhook_id=\Q$BASIC_META->{'X-Shopify-Webhook-Id'}\E status=200(?: answer=\S+)? attempts=1$/m,
         'one line per delivery');
    my (undef, $e) = control('GET', 'echo');
    is(scalar @{ $e->{value} }, 1, 'one delivery received');
    my $h = echo_headers($e->{value}[0]);
    my $body = decode_base64($e->{value}[0]{body_b64});
    open my $fh, '<:raw', $BASIC or die;
    my $file = do { local $/; <$fh> };
    ok($body eq $file, 'body sent byte for byte');
    is($h->{'x-shopify-hmac-sha256'}, $BASIC_META->{'X-Shopify-Hmac-Sha256'}, 'HMAC header = fixture metadata');
    my $mine = hmac_sha256_base64($body, $WEBHOOK_KEY);
    $mine .= '=' while length($mine) % 4;
    is($h->{'x-shopify-hmac-sha256'}, $mine, 'HMAC header = HMAC-SHA256 of the received bytes');
    for my $k (qw(X-Shopify-Topic X-Shopify-Shop-Domain X-Shopify-API-Version X-Shopify-Webhook-Id
                  X-Shopify-Event-Id X-Shopify-Triggered-At)) {
        is($h->{lc $k}, $BASIC_META->{$k}, "$k from the fixture metadata");
    }
    is($h->{'content-type'}, 'application/json', 'Content-Type');
};

subtest 'send: retries and duplicates keep the webhook id' => sub {
    control('DELETE', 'echo');
    control('POST', 'echo/config', {statuses => [500, 503]});
    my ($rc, $out) = run_cmd($PY, $SANDBOX, 'send', '--url', "$BASE/_sandbox/echo", '--secret', $WEBHOOK_KEY,
                             '--retries', '3', '--retry-delays', '0.05', '--duplicates', '1', $BASIC);
    is($rc, 0, 'exit 0');
    my @notes = grep { /^send: / } split /\n/, $out;
    my @lines = grep { !/^send: / } split /\n/, $out;
    is(scalar @lines, 2, 'two deliveries reported');
    like($lines[0], qr/status=200(?: answer=\S+)? attempts=3$/, 'first delivery: two failures then 200');
    like($lines[1], qr/status=200(?: answer=\S+)? attempts=1 duplicate=1$/, 'duplicate delivered once');
    # each failed attempt is told as it happens, not only once the retries
    # (hours, on Shopify's own schedule) are over
    is(scalar @notes, 2, 'one note per failed attempt');
    like($notes[0], qr/^send: orders-create-basic\.json webhook_id=\S+ attempt 1: status=500; attempt 2 in 0\.05 s$/,
         'the first failure and when the next attempt comes');
    like($notes[1], qr/attempt 2: status=503; attempt 3 in 0\.05 s$/, 'the second failure');
    my (undef, $e) = control('GET', 'echo');
    is(scalar @{ $e->{value} }, 4, 'four requests received');
    my %ids = map { echo_headers($_)->{'x-shopify-webhook-id'} => 1 } @{ $e->{value} };
    is_deeply([keys %ids], [$BASIC_META->{'X-Shopify-Webhook-Id'}], 'all with the same X-Shopify-Webhook-Id');
};

subtest 'send: exit status when a delivery never succeeds' => sub {
    control('DELETE', 'echo');
    control('POST', 'echo/config', {statuses => [500, 500, 500]});
    my ($rc, $out) = run_cmd($PY, $SANDBOX, 'send', '--url', "$BASE/_sandbox/echo", '--secret', $WEBHOOK_KEY,
                             '--retries', '1', '--retry-delays', '0.05', $BASIC);
    isnt($rc, 0, 'non-zero exit');
    like($out, qr/status=500(?: answer=\S+)? attempts=2$/m, 'final status and attempts reported');
    ($rc, $out) = run_cmd($PY, $SANDBOX, 'send', '--url', 'http://127.0.0.1:9/x', '--secret', $WEBHOOK_KEY,
                          '--retries', '0', $BASIC);
    isnt($rc, 0, 'connection refused: non-zero exit');
    like($out, qr/status=error:/, 'connection error reported');
    control('DELETE', 'echo');
};

done_testing();

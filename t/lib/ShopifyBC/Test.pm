package ShopifyBC::Test;

# End-to-end harness: each test file gets its own sandbox, nginx, stream,
# PostgreSQL database and worker, all on loopback, all stopped at exit.
# Redis is the suite's shared instance (TEST_NGINX_REDIS_PORT, started by
# scripts/test.sh); PostgreSQL comes from the PG* variables of scripts/pg-throwaway.sh.
# The logs live in a temporary directory removed at exit: when the file
# fails, the last 40 lines of each (workers, sandboxes, nginx error logs)
# are printed first.
#
# With TEST_NGINX_USE_VALGRIND set, nginx runs in the foreground under
# valgrind's memcheck (workers included) and the waits are longer.  At exit
# every nginx gets QUIT, valgrind's logs are read (Test::Nginx::Valgrind),
# and a report with a frame in our module makes the test file exit non-zero
# after the reports are printed.  Other reports are printed only.

use strict;
use warnings;

use Exporter 'import';
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use Digest::SHA qw(hmac_sha256_base64);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use Test::Nginx::Valgrind qw(valgrind_enabled valgrind_command
                             valgrind_slowdown valgrind_summary);

our @EXPORT = qw(
    top fixture fixture_headers expected sign json
    free_port wait_until
    redis redis_port
    start_sandbox sandbox_call sandbox_orders sandbox_faults
    test_ca start_dnsstub dns_queries shopify_requests
    start_nginx deliver
    create_database psql
    start_worker stop_worker worker_env
    slowdown
);

my $TOP = $ENV{SHOPIFY_BC_TOP} || abs_path(dirname(__FILE__) . '/../../..');
my $JSON = JSON::PP->new->utf8->canonical;
my $TMP = tempdir('shopify-bc-e2e.XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $TMP;

my @CHILDREN;
my %NGINX;
my $OWNER = $$;     # forked helpers must not tear the stack down

my $VALGRIND = valgrind_enabled();

# how many times longer things take than usual: 1, or 10 under valgrind
sub slowdown { valgrind_slowdown() }

sub top { $TOP }
sub json { $JSON }

sub slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or die "cannot open $path: $!";
    local $/;
    return scalar <$fh>;
}

sub fixture { slurp("$TOP/fixtures/shopify/$_[0]") }

sub fixture_headers {
    my $all = $JSON->decode(slurp("$TOP/fixtures/meta/webhook-headers.json"));
    return $all->{headers}{$_[0]} || die "no headers for $_[0]";
}

sub expected {
    my $all = $JSON->decode(slurp("$TOP/fixtures/expected/bc-sales-orders.json"));
    return $all->{$_[0]} || die "no expected order for $_[0]";
}

sub sign {
    my ($body, $secret) = @_;
    my $mac = hmac_sha256_base64($body, $secret);
    return $mac . '=' x ((4 - length($mac) % 4) % 4);
}

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub wait_until {
    my ($what, $timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $v = $cond->();
        return $v if $v;
        sleep 0.1;
    }
    die "timed out after ${timeout}s waiting for $what\n";
}

sub wait_port {
    my ($port, $what) = @_;
    wait_until("$what on port $port", 15, sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1);
    });
}

sub spawn {
    my ($log, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or die "exec $cmd[0]: $!";
    }
    push @CHILDREN, $pid;
    return $pid;
}

# --- Redis ------------------------------------------------------------

sub redis_port { $ENV{TEST_NGINX_REDIS_PORT} || 6379 }

sub redis {
    my @args = @_;
    my $port = redis_port();
    open my $fh, '-|', 'redis-cli', '-p', $port, '--raw', @args
        or die "redis-cli: $!";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    chomp $out;
    return $out;
}

# --- sandbox ----------------------------------------------------------

my %SANDBOX;

# Options become sandbox.py serve arguments (--key value), except
# https => 1: also an HTTPS listener on a free port, with a certificate for
# *.myshopify.com signed by the file's test CA (test_ca()); the returned
# hash then has https_port and ca (the CA file to trust).
sub start_sandbox {
    my (%opt) = @_;
    my $https = delete $opt{https};
    my $port = free_port();
    my @args = ('--host', '127.0.0.1', '--port', $port,
                '--tenant', 'e2e-tenant', '--client-id', 'e2e-client',
                '--client-secret', 'e2e-secret');
    my ($https_port, $ca);
    if ($https) {
        $ca = test_ca();
        $https_port = free_port();
        push @args, '--https-port', $https_port,
                    '--https-port-file', "$TMP/sandbox-$port.https",
                    '--tls-cert', $ca->{cert}, '--tls-key', $ca->{key};
    }
    push @args, map { ("--$_", $opt{$_}) } sort keys %opt;
    spawn("$TMP/sandbox-$port.log", 'python3', "$TOP/sandbox/sandbox.py",
          'serve', @args);
    wait_port($port, 'sandbox');
    # not by connecting: the HTTPS listener counts connections for tests
    wait_until('sandbox https listener', 15,
               sub { -s "$TMP/sandbox-$port.https" }) if $https;
    %SANDBOX = (port => $port, url => "http://127.0.0.1:$port",
                tenant => 'e2e-tenant', client_id => 'e2e-client',
                client_secret => 'e2e-secret');
    if ($https) {
        $SANDBOX{https_port} = $https_port;
        $SANDBOX{ca} = $ca->{ca};
    }
    return \%SANDBOX;
}

# The file's throwaway test CA (scripts/test-ca.sh), made once:
# { ca => CA certificate, cert => server certificate for *.myshopify.com,
#   myshopify.com, localhost, 127.0.0.1, key => its key, dir => ... }
my $CA;
sub test_ca {
    return $CA if $CA;
    my $dir = "$TMP/ca";
    system("$TOP/scripts/test-ca.sh", $dir) == 0
        or die "scripts/test-ca.sh $dir failed\n";
    $CA = { dir => $dir, ca => "$dir/ca.pem", cert => "$dir/server.pem",
            key => "$dir/server.key" };
    return $CA;
}

# The stub DNS server (sandbox/dnsstub.py) on a free UDP port: A records
# for *.myshopify.com are 127.0.0.1, everything else NXDOMAIN.  Returns
# { port, log }; point nginx at it with "resolver 127.0.0.1:<port>".
sub start_dnsstub {
    my (%opt) = @_;
    my $n = scalar grep { /dnsstub/ } glob "$TMP/dnsstub-*.port";
    my $pf = "$TMP/dnsstub-$n.port";
    my $log = "$TMP/dnsstub-$n.jsonl";
    spawn("$TMP/dnsstub-$n.log", 'python3', "$TOP/sandbox/dnsstub.py",
          '--port', 0, '--port-file', $pf, '--log', $log,
          '--ttl', $opt{ttl} // 30);
    my $port = wait_until('dnsstub port file', 15, sub {
        return unless -s $pf;
        my $p = slurp($pf);
        chomp $p;
        return $p =~ /^\d+$/ ? $p : undef;
    });
    return { port => $port, log => $log };
}

# every query the stub DNS server has answered, oldest first:
# [{ name, type, answer, time }, ...]
sub dns_queries {
    my ($dns) = @_;
    open my $fh, '<', $dns->{log} or return [];
    my @q = map { $JSON->decode($_) } grep { /\S/ } <$fh>;
    close $fh;
    return \@q;
}

# the sandbox's Shopify request log: { value => [...], last,
# connections, tls_failures } (see sandbox/shopify.py)
sub shopify_requests { sandbox_call('GET', '/_sandbox/shopify/requests') }

sub sandbox_call {
    my ($method, $path, $body) = @_;
    my $res = HTTP::Tiny->new(timeout => 10)->request(
        $method, "$SANDBOX{url}$path",
        defined $body
            ? { content => $JSON->encode($body),
                headers => { 'Content-Type' => 'application/json' } }
            : {});
    die "sandbox $method $path: $res->{status} $res->{content}\n"
        unless $res->{success};
    return length $res->{content} ? $JSON->decode($res->{content}) : undef;
}

sub sandbox_orders { sandbox_call('GET', '/_sandbox/orders')->{value} }

sub sandbox_faults { sandbox_call('POST', '/_sandbox/faults', [@_]) }

# --- nginx ------------------------------------------------------------

sub start_nginx {
    my (%opt) = @_;
    my $port = free_port();
    my $dir = "$TMP/nginx-$port";
    make_path("$dir/conf", "$dir/logs", "$dir/tmp");
    my $secret = $opt{secret} // 'e2e-webhook-secret';
    my $stream = $opt{stream} // die 'stream needed';
    my $timeout = $opt{redis_timeout} // '2s';
    my $connect_timeout = $opt{redis_connect_timeout} // '1s';
    my $log_level = $opt{log_level} // 'info';
    my $redis = $opt{redis_port} // redis_port();
    my $redis_options = $opt{redis_options} // '';
    my $workers = $opt{workers} // 2;
    # more configuration, e.g. the OAuth locations: inside http {} and
    # inside the server {}
    my $http_extra = $opt{http_extra} // '';
    my $server_extra = $opt{server_extra} // '';
    my $user = $> == 0 ? 'user root;' : '';
    my $daemon = $VALGRIND ? 'off' : 'on';
    my $so = "$TOP/build/nginx/ngx_http_shopify_module.so";
    open my $fh, '>', "$dir/conf/nginx.conf" or die $!;
    print $fh <<"CONF";
load_module $so;
$user
worker_processes $workers;
daemon $daemon;
pid $dir/logs/nginx.pid;
error_log $dir/logs/error.log $log_level;
events { worker_connections 256; }
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    shopify_redis 127.0.0.1:$redis $redis_options;
    shopify_redis_timeout $timeout;
    shopify_redis_connect_timeout $connect_timeout;
$http_extra
    server {
        listen 127.0.0.1:$port;
        client_body_buffer_size 512k;
        client_max_body_size 4m;
        location = /webhooks/shopify {
            shopify_webhook;
            shopify_webhook_secret $secret;
            shopify_webhook_stream $stream;
        }
        location = /health { shopify_health; }
$server_extra
    }
}
CONF
    close $fh;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my @cmd = ($bin, '-p', "$dir/", '-c', 'conf/nginx.conf', '-e',
               "$dir/logs/error.log");
    if ($VALGRIND) {
        start_valgrind_nginx($dir, $port, @cmd);
    } else {
        system(@cmd) == 0
            or die "nginx did not start; see $dir/logs/error.log\n";
        wait_port($port, 'nginx');
    }
    $NGINX{$port} = $dir;
    return { port => $port, dir => $dir, secret => $secret,
             url => "http://127.0.0.1:$port/webhooks/shopify",
             error_log => "$dir/logs/error.log" };
}

# Valgrind mode: nginx stays in the foreground, so it is started the way
# a daemon detaches: through an intermediate process that exits, which
# leaves nginx to init.  The test files then see it as they see a
# daemonised nginx (kill 0 on its pid fails once it is gone; nothing
# here has to reap it).
sub start_valgrind_nginx {
    my ($dir, $port, @nginx) = @_;
    my @cmd = (valgrind_command("$dir/logs", 1), @nginx);
    pipe my $r, my $w or die "pipe: $!";
    my $mid = fork // die "fork: $!";
    if ($mid == 0) {
        close $r;
        my $pid = fork;
        POSIX::_exit(1) unless defined $pid;
        if ($pid) {
            print $w "$pid\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/logs/nginx-start.log";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    close $w;
    my $pid = <$r>;
    close $r;
    waitpid $mid, 0;
    chomp($pid //= '');
    die "cannot start valgrind\n" unless $pid =~ /^\d+$/;
    wait_until("nginx under valgrind on port $port", 120, sub {
        die "nginx under valgrind exited; see $dir/logs/error.log and"
            . " $dir/logs/nginx-start.log\n" unless kill 0, $pid;
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1);
    });
}

# one Shopify-style delivery; returns the HTTP status (599: no answer)
sub deliver {
    my ($nginx, $body, %h) = @_;
    my %headers = (
        'X-Shopify-Hmac-Sha256' => sign($body, $nginx->{secret}),
        'X-Shopify-Topic' => 'orders/create',
        'X-Shopify-Shop-Domain' => 'acme-demo.myshopify.com',
        'X-Shopify-API-Version' => '2024-04',
        'Content-Type' => 'application/json',
        %h,
    );
    delete $headers{$_} for grep { !defined $headers{$_} } keys %headers;
    my $res = HTTP::Tiny->new(timeout => 5 * slowdown())->request(
        'POST', $nginx->{url}, { content => $body, headers => \%headers });
    return $res->{status};
}

# --- PostgreSQL -------------------------------------------------------

sub create_database {
    my ($name) = @_;
    local $ENV{PGOPTIONS} = '-c client_min_messages=warning';
    system('dropdb', '--if-exists', $name) == 0 or die "dropdb $name";
    system('createdb', $name) == 0 or die "createdb $name";
    my $host = $ENV{PGHOST} || 'localhost';
    my $port = $ENV{PGPORT} || 5432;
    my $user = $ENV{PGUSER} || 'postgres';
    my $pass = $ENV{PGPASSWORD} // '';
    return "postgresql://$user:$pass\@$host:$port/$name";
}

# rows of a query as arrays of strings
sub psql {
    my ($db, $sql) = @_;
    open my $fh, '-|', 'psql', '-X', '-q', '-A', '-t', '-F', "\t",
        '-v', 'ON_ERROR_STOP=1', '-d', $db, '-c', $sql
        or die "psql: $!";
    my @rows = map { chomp; [split /\t/, $_, -1] } <$fh>;
    close $fh or die "psql failed: $sql\n";
    return @rows;
}

# --- worker -----------------------------------------------------------

sub worker_env {
    my (%opt) = @_;
    return (
        REDIS_URL => 'redis://127.0.0.1:' . redis_port() . '/0',
        DATABASE_URL => $opt{database} // die('database needed'),
        STREAM_KEY => $opt{stream} // die('stream needed'),
        STREAM_GROUP => 'bc-sync',
        WORKER_NAME => $opt{name} // 'e2e-worker',
        BC365_TENANT_ID => $SANDBOX{tenant},
        BC365_CLIENT_ID => $SANDBOX{client_id},
        BC365_CLIENT_SECRET => $SANDBOX{client_secret},
        BC365_ENVIRONMENT => 'production',
        BC365_COMPANY_ID => $opt{company},
        BC365_API_BASE => $SANDBOX{url},
        BC365_AUTH_BASE => $SANDBOX{url},
        BC365_DEFAULT_CUSTOMER => 'WEB',
        BC365_SHIPPING_ACCOUNT => $opt{shipping_account},
        SKU_MAP_JSON => '{}',
        VARIANT_MAP_FILE => "$TOP/fixtures/meta/variant-map.json",
        # the fixtures' EUR shops book in the sandbox's EUR company
        BC365_COMPANIES => '{"acme-demo-eu.myshopify.com":'
            . '"a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6",'
            . '"acme-europe-webshop.myshopify.com":'
            . '"a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6"}',
        BC365_ROUNDING_ACCOUNT => '40900',   # Rounding Differences
        METRICS_ADDR => '127.0.0.1:' . ($opt{metrics_port} // free_port()),
        LOG_LEVEL => 'debug',
        # a short in-doubt wait (default 11 min: BC's 10 min limit + 1)
        BC365_INDOUBT_WAIT_MS => 3000,
        %{ $opt{env} || {} },
    );
}

# the last $n lines of a file, as one string ('' if it cannot be read)
sub log_tail {
    my ($path, $n) = @_;
    open my $fh, '<', $path or return '';
    my @lines = <$fh>;
    close $fh;
    splice @lines, 0, @lines - $n if @lines > $n;
    return join '', @lines;
}

# Starts the worker and returns once it is ready: its GET /health answers
# 200, which it does only after the consumer group exists and the ledger
# migration has committed.  With METRICS_ADDR=off, once the ledger table
# exists.  A worker that exits first, or is not ready within
# ready_timeout seconds (30), is an error that shows its log.  A --drain
# or --once worker that has already finished with status 0 is fine.
sub start_worker {
    my (%opt) = @_;
    my %env = worker_env(%opt);
    my $log = "$TMP/worker-" . ($opt{name} // 'e2e-worker') . '.log';
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env{$_} for keys %env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or die "$log: $!";
        open STDERR, '>&', \*STDOUT;
        exec "$TOP/worker/build/shopify-bc-worker", @{ $opt{args} || [] }
            or die "exec worker: $!";
    }
    push @CHILDREN, $pid;
    my $w = { pid => $pid, log => $log };
    worker_ready($w, \%env, $opt{ready_timeout} // 30);
    return $w;
}

sub worker_ready {
    my ($w, $env, $timeout) = @_;
    my ($host, $port) = ($env->{METRICS_ADDR} // '') =~ /^\[?(.*?)\]?:(\d+)$/;
    $host = '127.0.0.1' if defined $host && $host eq '';
    $host = "[$host]" if defined $host && $host =~ /:/;
    my $http = HTTP::Tiny->new(timeout => 1);
    my $deadline = time + $timeout;
    while (time < $deadline) {
        if (waitpid($w->{pid}, WNOHANG) == $w->{pid}) {
            my $status = $? >> 8;
            @CHILDREN = grep { $_ != $w->{pid} } @CHILDREN;
            $w->{exited} = $?;
            return if $? == 0;
            die "worker exited with status $status before it was ready;"
                . " last lines of $w->{log}:\n" . log_tail($w->{log}, 40);
        }
        if (defined $port) {
            return if $http->get("http://$host:$port/health")->{status}
                      == 200;
        } else {
            my ($row) = eval { psql($env->{DATABASE_URL},
                "SELECT to_regclass('bc_order_ledger') IS NOT NULL") };
            return if $row && $row->[0] eq 't';
        }
        sleep 0.1;
    }
    die "worker not ready after ${timeout}s ("
        . (defined $port ? "GET /health never answered 200"
                         : 'no bc_order_ledger table')
        . "); last lines of $w->{log}:\n" . log_tail($w->{log}, 40);
}

sub stop_worker {
    my ($w, $signal) = @_;
    return $w->{exited} if defined $w->{exited};
    kill $signal // 'TERM', $w->{pid};
    waitpid $w->{pid}, 0;
    @CHILDREN = grep { $_ != $w->{pid} } @CHILDREN;
    return $? ;
}

# Valgrind mode, at exit: read the logs of every nginx this file
# started.  Returns false when one has a report from our code, or never
# got to valgrind's exit checks.
sub check_valgrind_logs {
    my ($ok, %shown, $logs) = (1);
    for my $dir (sort values %NGINX) {
        my @files = sort glob "$dir/logs/valgrind-*.log";
        $logs += @files;
        my ($ours, $others, $incomplete) = valgrind_summary(@files);
        if (!@files) {
            Test::More::diag("valgrind wrote no log in $dir/logs");
            $ok = 0;
        }
        for my $rep (@$incomplete) {
            Test::More::diag($rep->{head});
            $ok = 0;
        }
        $ok = 0 if @$ours;
        for my $rep (@$ours, @$others) {
            next if $shown{$rep->{sig}}++;
            Test::More::diag("valgrind, "
                . ($rep->{ours} ? 'from our code' : 'not from our code'
                                  . ' (not a failure)')
                . " (pid $rep->{pid}, $dir):\n$rep->{text}");
        }
    }
    Test::More::diag(sprintf "valgrind: %d log(s) of %d nginx: %s",
        $logs // 0, scalar keys %NGINX,
        $ok ? 'nothing from our code' : 'FAILED, see above');
    return $ok;
}

END {
    return unless $$ == $OWNER;
    my $status = $?;
    # under valgrind the exit includes the leak check of every process
    my $wait = $VALGRIND ? 1800 : 50;
    for my $dir (values %NGINX) {
        my $pidfile = "$dir/logs/nginx.pid";
        next unless -f $pidfile;
        my $pid = slurp($pidfile);
        chomp $pid;
        kill 'QUIT', $pid;
        for (1 .. $wait) { last unless kill 0, $pid; sleep 0.1 }
        kill 'KILL', $pid if kill 0, $pid;
    }
    if ($VALGRIND && %NGINX && !check_valgrind_logs()) {
        $status ||= 1;
    }
    for my $pid (@CHILDREN) {
        kill 'TERM', $pid;
    }
    for my $pid (@CHILDREN) {
        for (1 .. 50) { last if waitpid($pid, WNOHANG); sleep 0.1 }
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    if ($status && $ENV{SHOPIFY_BC_KEEP_LOGS}) {
        system("cat $TMP/*.log >&2");
    }
    # the logs go with the temporary directory: show why a file failed
    my $failed = $status || (Test::Builder->can('new')
                             && !Test::Builder->new->is_passing);
    if ($failed) {
        for my $log (sort(glob("$TMP/*.log")),
                     map { "$_/logs/error.log" } sort values %NGINX) {
            my $tail = log_tail($log, 40);
            next unless length $tail;
            my $n = () = $tail =~ /\n/g;
            Test::More::diag("last $n lines of $log:\n$tail");
        }
    }
    $? = $status;
}

1;

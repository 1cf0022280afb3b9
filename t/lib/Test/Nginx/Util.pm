package Test::Nginx::Util;

# Server-side half of the Test::Nginx::Socket compatible runner: the
# settings a test file's preamble can change, the server root layout, the
# generated nginx.conf, starting and stopping nginx, and reading the part
# of error.log that a block produced.  The client side (requests, response
# parsing, assertions) lives in Test::Nginx::Socket.

use strict;
use warnings;

use Cwd ();
use Exporter 'import';
use File::Path ();
use File::Spec;
use IO::Socket::INET;
use IPC::Run ();
use POSIX ();
use Test::More ();
use Time::HiRes ();

use Test::Nginx::Valgrind qw(valgrind_command valgrind_summary);

our @EXPORT_OK = qw(
    repeat_each no_long_string log_level master_on master_off
    master_process_enabled workers worker_connections env_to_nginx
    no_root_location no_shuffle html_dir server_root server_port
    add_block_preprocessor bail_out

    parse_time expand_env write_config setup_server_root reset_html_dir
    write_user_files start_nginx stop_nginx nginx_pid mark_error_log
    new_error_log_lines block_log_tail check_valgrind
);

our %EXPORT_TAGS = (
    preamble => [qw(
        repeat_each no_long_string log_level master_on master_off
        master_process_enabled workers worker_connections env_to_nginx
        no_root_location no_shuffle html_dir server_root server_port
        add_block_preprocessor bail_out
    )],
);


# ---------------------------------------------------------------------
# Settings.  Environment variables give the defaults; the preamble
# functions below override them for one test file.
# ---------------------------------------------------------------------

sub env_or {
    my ($name, $default) = @_;
    my $v = $ENV{$name};
    return (defined $v && $v ne '') ? $v : $default;
}

# Valgrind mode (TEST_NGINX_USE_VALGRIND, see Test::Nginx::Valgrind and
# t/README.md): nginx runs in the foreground under memcheck, started and
# reaped by the runner, and the default request timeout, the error.log
# settle time and the start/stop limits are $Slowdown times longer.
our $UseValgrind = Test::Nginx::Valgrind::valgrind_enabled();
our $Slowdown    = Test::Nginx::Valgrind::valgrind_slowdown();

our $NginxBinary = env_or('TEST_NGINX_BINARY', 'nginx');
our $ServerAddr  = env_or('TEST_NGINX_SERVER_ADDR', '127.0.0.1');
our $ServerPort  = env_or('TEST_NGINX_SERVER_PORT',
                          env_or('TEST_NGINX_PORT', 1984));
our $ClientPort  = env_or('TEST_NGINX_CLIENT_PORT', $ServerPort);
our $LogLevel    = env_or('TEST_NGINX_LOG_LEVEL', 'debug');
our $Timeout     = parse_time(env_or('TEST_NGINX_TIMEOUT', 3)) * $Slowdown;
our $Sleep       = env_or('TEST_NGINX_SLEEP', 0.015) * $Slowdown;
our $NoClean     = env_or('TEST_NGINX_NO_CLEAN', 0);
our $Shuffle     = env_or('TEST_NGINX_SHUFFLE', 0);
our $Verbose     = env_or('TEST_NGINX_VERBOSE', 0);
our $MasterProcessEnabled =
    lc env_or('TEST_NGINX_MASTER_PROCESS', 'off') eq 'on' ? 'on' : 'off';

our $RepeatEach        = 1;
our $NoLongString      = 0;
our $Workers           = 1;
our $WorkerConnections = 64;
our $NoRootLocation    = 0;
our @EnvToNginx;
our @BlockPreprocessors;

# How long nginx gets to come up, and to go away after each signal.
# Under valgrind, start-up and the leak check at exit take seconds.
our $StartTimeout = $UseValgrind ? 120 : 10;
our $StopTimeout  = $UseValgrind ? 180 : 5;

our $ServRoot = File::Spec->rel2abs(
    env_or('TEST_NGINX_SERVROOT',
           File::Spec->catdir(Cwd::getcwd(), 't', 'servroot')));
$ServRoot =~ s{/+\z}{};

our $ConfDir    = "$ServRoot/conf";
our $HtmlDir    = "$ServRoot/html";
our $LogDir     = "$ServRoot/logs";
our $ConfFile   = "$ConfDir/nginx.conf";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $PidFile    = "$LogDir/nginx.pid";
our $StartLog   = "$LogDir/nginx-start.log";

# Temporary directories that http{} must not leave at their compiled-in
# defaults (Debian's point under /var/lib/nginx).
our @TempDirs = qw(client_body_temp proxy_temp fastcgi_temp uwsgi_temp
                   scgi_temp);

# Let config sections and eval code find the server without guessing.
$ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
$ENV{TEST_NGINX_SERVROOT}    = $ServRoot;
$ENV{TEST_NGINX_HTML_DIR}    = $HtmlDir;


# ---------------------------------------------------------------------
# Preamble functions
# ---------------------------------------------------------------------

sub repeat_each {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub no_long_string { $NoLongString = 1 }

# Blocks always run in file order.  no_shuffle() is accepted so that test
# files stay portable; TEST_NGINX_SHUFFLE=1 asks for a random order.
sub no_shuffle { $Shuffle = 0 }

sub log_level {
    $LogLevel = shift if @_;
    return $LogLevel;
}

sub master_on  { $MasterProcessEnabled = 'on' }
sub master_off { $MasterProcessEnabled = 'off' }

sub master_process_enabled {
    if (@_) {
        $MasterProcessEnabled = $_[0] ? 'on' : 'off';
    }
    return $MasterProcessEnabled eq 'on';
}

sub workers {
    $Workers = shift if @_;
    return $Workers;
}

sub worker_connections {
    $WorkerConnections = shift if @_;
    return $WorkerConnections;
}

sub env_to_nginx { push @EnvToNginx, @_ }

sub no_root_location { $NoRootLocation = 1 }

sub html_dir    { $HtmlDir }
sub server_root { $ServRoot }
sub server_port { $ServerPort }

sub add_block_preprocessor {
    my ($code) = @_;
    die "add_block_preprocessor() wants a code reference\n"
        unless ref $code eq 'CODE';
    push @BlockPreprocessors, $code;
}

sub bail_out {
    Test::More::BAIL_OUT(join '', @_);
}


# ---------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------

# "3", "3s", "250ms", "0.5" -> seconds.  undef stays undef.
sub parse_time {
    my ($t) = @_;
    return undef unless defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^(\d+(?:\.\d+)?)ms$/;
    return $1 + 0    if $t =~ /^(\d+(?:\.\d+)?)s?$/;
    bail_out("cannot understand the time value \"$t\"");
}

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}

sub spew {
    my ($file, $data) = @_;
    open my $fh, '>', $file or bail_out("cannot write $file: $!");
    binmode $fh;
    print {$fh} $data;
    close $fh or bail_out("cannot write $file: $!");
}

# Replace every $TEST_NGINX_NAME in a section value.  Strings inside array
# references (and the "value" of packet hashes) are expanded too; regexes
# and other references are left alone.  $TEST_NGINX_RAND_PORT_<n> gets a
# free port, the same one for every use of <n> inside one block ($ports
# is the per-block memo).  An unset variable stops the whole run.
sub expand_env {
    my ($value, $name, $section, $ports) = @_;

    return $value unless defined $value;

    if (ref $value eq 'ARRAY') {
        return [map { expand_env($_, $name, $section, $ports) } @$value];
    }

    if (ref $value eq 'HASH') {
        my %copy = %$value;
        $copy{value} = expand_env($copy{value}, $name, $section, $ports);
        return \%copy;
    }

    return $value if ref $value;

    $value =~ s{\$(TEST_NGINX_[A-Z0-9_]+)}
               {env_value($1, $name, $section, $ports)}ge;
    return $value;
}

sub env_value {
    my ($var, $name, $section, $ports) = @_;

    if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
        $ports->{$var} //= free_port($ports);
        return $ports->{$var};
    }

    return $ENV{$var} if defined $ENV{$var};

    bail_out("$name - \$$var is used in --- $section"
             . " but the environment variable is not set");
}

# Ask the kernel for an unused port, avoiding the server port and the
# ports already handed out in this block.
sub free_port {
    my ($taken) = @_;
    my %avoid = map { $_ => 1 } $ServerPort, $ClientPort,
                                 grep { defined } values %$taken;

    for (1 .. 50) {
        my $sock = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => 0,
            Proto     => 'tcp',
            Listen    => 1,
        ) or next;
        my $port = $sock->sockport;
        close $sock;
        return $port unless $avoid{$port};
    }

    bail_out("cannot find a free TCP port for \$TEST_NGINX_RAND_PORT_*");
}

# True when some socket is listening on the TCP port.  /proc/net/tcp is
# read rather than connecting, so the probe leaves no "client closed
# connection" line in error.log; without /proc a connect is tried.
sub port_listening {
    my ($port) = @_;
    my $seen_proc = 0;

    for my $table ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $table or next;
        $seen_proc = 1;
        while (my $line = <$fh>) {
            my @f = split ' ', $line;
            next unless @f > 3 && $f[1] =~ /:([0-9A-Fa-f]{4})$/;
            # State 0A is TCP_LISTEN.
            return 1 if hex($1) == $port && $f[3] eq '0A';
        }
        close $fh;
    }

    return 0 if $seen_proc;

    my $sock = IO::Socket::INET->new(
        PeerAddr => $ServerAddr,
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => 0.5,
    );
    return $sock ? 1 : 0;
}

# A pid counts as running unless it is gone or only a zombie.
sub is_running {
    my ($pid) = @_;
    return 0 unless $pid && kill(0, $pid);
    my $stat = slurp("/proc/$pid/stat");
    return 0 if defined $stat && $stat =~ /^\d+ \(.*\) Z /s;
    return 1;
}

sub wait_until {
    my ($seconds, $cond) = @_;
    my $deadline = Time::HiRes::time() + $seconds;
    while (1) {
        return 1 if $cond->();
        return 0 if Time::HiRes::time() >= $deadline;
        Time::HiRes::sleep(0.01);
    }
}


# ---------------------------------------------------------------------
# nginx binary facts
# ---------------------------------------------------------------------

my $NginxV;

sub nginx_v {
    return $NginxV if defined $NginxV;
    my ($out, $err) = ('', '');
    my $ok = eval {
        IPC::Run::run([$NginxBinary, '-V'], \undef, \$out, \$err,
                      IPC::Run::timeout(10));
    };
    if (!$ok) {
        my $why = $@ || $err || "exit status " . ($? >> 8);
        bail_out("cannot run \"$NginxBinary -V\" (set TEST_NGINX_BINARY):"
                 . " $why");
    }
    $NginxV = $out . $err;
    return $NginxV;
}

# "-e file" (log before the config is read) exists since nginx 1.19.5.
sub nginx_has_e_switch {
    return 0 unless nginx_v() =~ m{nginx/(\d+)\.(\d+)\.(\d+)};
    return sprintf('%03d%03d%03d', $1, $2, $3) ge '001019005';
}

# Temp path directives only exist for modules that were compiled in.
sub temp_path_directives {
    my $v = nginx_v();
    my @out = ("client_body_temp_path $ServRoot/client_body_temp;");
    for my $m (qw(proxy fastcgi uwsgi scgi)) {
        next if $v =~ /--without-http_${m}_module/;
        push @out, "${m}_temp_path $ServRoot/${m}_temp;";
    }
    return @out;
}


# ---------------------------------------------------------------------
# Server root
# ---------------------------------------------------------------------

# Start each test file from a clean tree.  Only the directories the
# runner owns are removed, never the server root itself, so a mistaken
# TEST_NGINX_SERVROOT cannot wipe unrelated files.
sub setup_server_root {
    stop_leftover_nginx();

    for my $dir ($ConfDir, $HtmlDir, $LogDir,
                 map { "$ServRoot/$_" } @TempDirs)
    {
        File::Path::remove_tree($dir) if -d $dir;
    }

    for my $dir ($ServRoot, $ConfDir, $HtmlDir, $LogDir) {
        File::Path::make_path($dir, { error => \my $err });
        bail_out("cannot create $dir") unless -d $dir;
    }

    # Create the log now so that offsets are always meaningful.
    spew($ErrLogFile, '');
    reset_html_dir();
}

sub reset_html_dir {
    File::Path::remove_tree($HtmlDir) if -d $HtmlDir;
    File::Path::make_path($HtmlDir);
    spew("$HtmlDir/index.html",
         "<html><body>Test::Nginx::Socket server root</body></html>\n");
}

# user_files: either the text form
#     >>> name [YYYYMMDDhhmm]
#     content...
# or (with eval) an array of [name, content, optional mtime] entries.
sub write_user_files {
    my ($name, $spec) = @_;
    my @files;

    if (ref $spec eq 'ARRAY') {
        for my $f (@$spec) {
            bail_out("$name - --- user_files eval must give"
                     . " [name, content, mtime?] arrays")
                unless ref $f eq 'ARRAY' && defined $f->[0];
            push @files, [$f->[0], $f->[1] // '', $f->[2]];
        }

    } else {
        my @parts = split /^>>>[ \t]+(\S+)(?:[ \t]+(\d{12}))?[ \t]*\n/m,
                          $spec;
        my $junk = shift @parts;
        bail_out("$name - --- user_files must start with \">>> name\"")
            if defined $junk && $junk =~ /\S/;
        while (@parts) {
            my ($file, $mtime, $content) = splice @parts, 0, 3;
            push @files, [$file, $content // '', $mtime];
        }
    }

    for my $f (@files) {
        my ($file, $content, $mtime) = @$f;
        bail_out("$name - user file \"$file\" must be a relative path"
                 . " inside html/")
            if $file =~ m{^/} || $file =~ m{(?:^|/)\.\.(?:/|$)};

        my $path = "$HtmlDir/$file";
        (my $dir = $path) =~ s{/[^/]*\z}{};
        File::Path::make_path($dir) unless -d $dir;
        spew($path, $content);

        if (defined $mtime) {
            my ($y, $mo, $d, $h, $mi) =
                $mtime =~ /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)$/
                or bail_out("$name - bad user file mtime \"$mtime\"");
            my $t = POSIX::mktime(0, $mi, $h, $d, $mo - 1, $y - 1900);
            utime $t, $t, $path;
        }
    }
}


# ---------------------------------------------------------------------
# nginx.conf
# ---------------------------------------------------------------------

sub load_module_lines {
    my @lines;
    for my $so (split ' ', env_or('TEST_NGINX_LOAD_MODULES', '')) {
        my $abs = File::Spec->rel2abs($so);
        bail_out("TEST_NGINX_LOAD_MODULES names $so, which does not"
                 . " exist") unless -f $abs;
        push @lines, "load_module $abs;";
    }
    return @lines;
}

# Re-indent a section for the generated file: drop the indentation its
# lines share, then prefix $pad.
sub indent {
    my ($text, $pad) = @_;
    return '' unless defined $text && $text =~ /\S/;
    $text =~ s/\s+\z//;
    $text =~ s/\A(?:[ \t]*\n)+//;

    my ($common) = sort { length $a <=> length $b }
                   $text =~ /^([ \t]*)\S/mg;
    $text =~ s/^\Q$common\E//mg if length $common;
    $text =~ s/^(?=.)/$pad/mg;
    return "$text\n";
}

# Write conf/nginx.conf for one block.  %c holds the block's sections
# (config, http_config, main_config, post_main_config), already expanded,
# plus server_name and log_level.
sub write_config {
    my (%c) = @_;

    my $level = $c{log_level} // $LogLevel;
    my $server_name = $c{server_name} // 'localhost';
    my $conf = '';

    $conf .= "# Written by t/lib/Test/Nginx/Util.pm for\n";
    $conf .= "# $c{name}\n\n" if defined $c{name};

    $conf .= "$_\n" for load_module_lines();
    $conf .= "user root;\n" if $> == 0;
    $conf .= "worker_processes $Workers;\n";
    # Under valgrind nginx stays in the foreground: the runner started it
    # and waits for it, so that the leak report is written.
    $conf .= $UseValgrind ? "daemon off;\n" : "daemon on;\n";
    $conf .= "master_process $MasterProcessEnabled;\n";
    $conf .= "error_log $ErrLogFile $level;\n";
    $conf .= "pid $PidFile;\n";
    $conf .= "env $_;\n" for @EnvToNginx;

    $conf .= "\nevents {\n";
    $conf .= "    accept_mutex off;\n";
    $conf .= "    worker_connections $WorkerConnections;\n";
    $conf .= "}\n\n";

    $conf .= indent($c{main_config}, '');

    $conf .= "\nhttp {\n";
    $conf .= "    access_log $AccLogFile;\n";
    $conf .= "    $_\n" for temp_path_directives();
    $conf .= "    default_type text/plain;\n";
    $conf .= "    keepalive_timeout 68;\n\n";
    $conf .= indent($c{http_config}, '    ');

    $conf .= "\n    server {\n";
    $conf .= "        listen $ServerPort;\n";
    $conf .= "        server_name $server_name;\n";
    $conf .= "        client_max_body_size 30M;\n\n";
    $conf .= indent($c{config}, '        ');

    if (!$NoRootLocation) {
        $conf .= "\n        location / {\n";
        $conf .= "            root html;\n";
        $conf .= "            index index.html index.htm;\n";
        $conf .= "        }\n";
    }

    $conf .= "    }\n";
    $conf .= "}\n";
    $conf .= "\n" . indent($c{post_main_config}, '')
        if defined $c{post_main_config};

    spew($ConfFile, $conf);
}


# ---------------------------------------------------------------------
# Starting and stopping nginx
# ---------------------------------------------------------------------

my $NginxPid;       # pid from logs/nginx.pid of the running server
my $OwnerPid = $$;  # END must not act in a forked child
my $ChildPid;       # valgrind mode: the nginx we forked (same as $NginxPid)
my %ValgrindSeen;   # valgrind logs already looked at, by path

sub nginx_pid { $NginxPid }

sub read_pid_file {
    my $pid = slurp($PidFile);
    return undef unless defined $pid && $pid =~ /^\s*(\d+)\s*$/;
    return $1;
}

# Start nginx on the current conf/nginx.conf.  Returns (pid) on success,
# or (undef, reason) when nginx refused to start or never got ready.
sub start_nginx {
    unlink $PidFile;

    if (port_listening($ServerPort)) {
        wait_until(2, sub { !port_listening($ServerPort) })
            or bail_out("port $ServerPort is already in use by another"
                        . " process; set TEST_NGINX_PORT to a free one");
    }

    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile);
    push @cmd, '-e', $ErrLogFile if nginx_has_e_switch();

    return start_nginx_valgrind(@cmd) if $UseValgrind;

    # Output goes to a file, not a pipe: a daemonised nginx may keep
    # its stderr open, and a pipe would then never see end-of-file.
    my $ok = eval {
        IPC::Run::run(\@cmd, '<', '/dev/null', '>', $StartLog,
                      '2>&1', IPC::Run::timeout($StartTimeout));
    };
    my $status = $?;
    my $output = slurp($StartLog) // '';

    if (!$ok) {
        my $why = $@ ? "did not finish: $@"
                     : "exited with status " . ($status >> 8);
        return (undef, "\"@cmd\" $why\n$output");
    }

    my $pid;
    my $ready = wait_until($StartTimeout, sub {
        $pid //= read_pid_file();
        return $pid && port_listening($ServerPort);
    });

    if (!$ready) {
        my $what = $pid ? "port $ServerPort never started listening"
                        : "no pid appeared in $PidFile";
        return (undef, "nginx started but $what within ${StartTimeout}s"
                       . "\n$output");
    }

    if (!is_running($pid)) {
        return (undef, "nginx (pid $pid) exited right after starting\n"
                       . $output);
    }

    $NginxPid = $pid;
    return ($pid);
}

# Valgrind mode: nginx runs in the foreground ("daemon off" in the
# config) as our child, so the pid we fork is nginx's pid (valgrind runs
# the program in its own process).  Forked workers (master_on()) stay
# under valgrind too; --trace-children also covers an exec'd nginx.
sub start_nginx_valgrind {
    my (@nginx) = @_;
    my @cmd = (valgrind_command($LogDir, $MasterProcessEnabled eq 'on'),
               @nginx);

    my $pid = fork;
    return (undef, "cannot fork: $!") unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $StartLog;
        open STDERR, '>&', \*STDOUT;
        exec @cmd or print STDERR "cannot run $cmd[0]: $!\n";
        POSIX::_exit(127);
    }

    $ChildPid = $NginxPid = $pid;

    my $ready = wait_until($StartTimeout, sub {
        return 1 if port_listening($ServerPort);
        return 1 if !is_running($pid);
        return 0;
    });

    if (!is_running($pid)) {
        reap_child();
        undef $NginxPid;
        my $output = slurp($StartLog) // '';
        return (undef, "\"@cmd\" exited with status " . ($? >> 8)
                       . "\n$output");
    }

    if (!$ready) {
        return (undef, "nginx under valgrind (pid $pid) did not listen on"
                       . " port $ServerPort within ${StartTimeout}s\n"
                       . (slurp($StartLog) // ''));
    }

    return ($pid);
}

# Collect our exited nginx so that it leaves no zombie behind.
sub reap_child {
    return unless defined $ChildPid;
    my $r = waitpid $ChildPid, 0;
    undef $ChildPid;
    return $r;
}

# Valgrind logs of this server root not looked at yet: the block that
# just ran wrote them (each block's nginx has new pids).  Returns
# (\@ours, \@others, \@incomplete, number of logs); see
# Test::Nginx::Valgrind::valgrind_summary.
sub check_valgrind {
    my @files = grep { !$ValgrindSeen{$_}++ }
                sort glob "$LogDir/valgrind-*.log";
    return (valgrind_summary(@files), scalar @files);
}

# Stop the server: QUIT, then TERM, then KILL, each given $StopTimeout
# seconds.  The pid file names the master when master_on() is in effect,
# so the whole process tree goes down through it.  Under valgrind the
# QUIT is waited for until valgrind has written its leak report.
sub stop_nginx {
    my $pid = $NginxPid // $ChildPid // read_pid_file();
    undef $NginxPid;
    return unless $pid;

    for my $sig ('QUIT', 'TERM', 'KILL') {
        last unless is_running($pid);
        kill $sig, $pid;
        last if wait_until($StopTimeout, sub { !is_running($pid) });
        Test::More::diag("nginx (pid $pid) ignored SIG$sig")
            unless $sig eq 'KILL';
    }

    if (is_running($pid)) {
        bail_out("cannot stop nginx (pid $pid)");
    }

    reap_child() if defined $ChildPid && $ChildPid == $pid;

    # A killed nginx leaves its pid file behind.
    unlink $PidFile;

    wait_until($StopTimeout, sub { !port_listening($ServerPort) })
        or Test::More::diag("port $ServerPort still busy after nginx"
                            . " (pid $pid) exited");
}

# An nginx left over from an interrupted run (or TEST_NGINX_NO_CLEAN)
# would keep the port; its pid is in our own server root.
sub stop_leftover_nginx {
    my $pid = read_pid_file();
    return unless $pid && is_running($pid);

    # Under valgrind the executable is valgrind's memcheck tool.
    my $exe = readlink "/proc/$pid/exe";
    return if defined $exe && $exe !~ /nginx|memcheck|valgrind/;

    $NginxPid = $pid;
    stop_nginx();
}

END {
    if ($$ == $OwnerPid && defined $NginxPid && !$NoClean) {
        # Keep the test script's exit status: stop_nginx runs children.
        local $?;
        stop_nginx();
    }
}


# ---------------------------------------------------------------------
# error.log
# ---------------------------------------------------------------------

my $ErrLogPos = 0;     # end of what the checks have already seen
my $BlockLogPos = 0;   # where the current block's lines begin

# Remember where the log ends, so later reads return only new lines.
sub mark_error_log {
    $ErrLogPos = $BlockLogPos = (-s $ErrLogFile) || 0;
}

# Lines written since the last mark or read.  The short sleep lets nginx
# finish lines written after the response, e.g. in the log phase.
sub new_error_log_lines {
    Time::HiRes::sleep($Sleep * 3);

    open my $fh, '<', $ErrLogFile or return [];
    seek $fh, $ErrLogPos, 0;
    my @lines = <$fh>;
    $ErrLogPos = tell $fh;
    close $fh;
    return \@lines;
}

# The last $n lines the current block wrote, for failure diagnostics.
# [debug] lines are left out when there is anything else to show.
sub block_log_tail {
    my ($n) = @_;
    $n //= 20;
    open my $fh, '<', $ErrLogFile or return '';
    seek $fh, $BlockLogPos, 0;
    my @lines = <$fh>;
    close $fh;
    my @useful = grep { !/ \[debug\] / } @lines;
    @lines = @useful if @useful;
    splice @lines, 0, @lines - $n if @lines > $n;
    return join '', @lines;
}

1;

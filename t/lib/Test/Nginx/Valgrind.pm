package Test::Nginx::Valgrind;

# Valgrind (memcheck) support shared by the block runner
# (Test::Nginx::Util / Test::Nginx::Socket) and the end-to-end harness
# (ShopifyBC::Test).  It builds the valgrind command line, says how much
# slower everything gets, and reads the logs valgrind leaves behind.
#
# TEST_NGINX_USE_VALGRIND     unset, "" or "0": off; anything else: on
# TEST_NGINX_VALGRIND_SLOWDOWN  factor for the default timeouts (10)
# TEST_NGINX_VALGRIND_OURS    Perl regex; a report with a stack frame
#                             matching it is "ours" and fails the test
#
# A report is one paragraph of a valgrind log: a headline ("Invalid read
# of size 4", "40 bytes in 1 blocks are definitely lost ...") and the
# stack(s) under it, including the "Address ... alloc'd" / "free'd" and
# "Uninitialised value was created" stacks.  A report is ours when any
# of those frames is in our module: a function or source file named
# ngx_http_shopify_*, or code in ngx_http_shopify_module.so; or in
# libhiredis, which only our module brings into nginx, so any hiredis
# frame was reached through us.  Everything else (nginx, OpenSSL, glibc)
# is shown but does not fail a test.

use strict;
use warnings;

use Exporter 'import';
use Cwd ();
use File::Basename ();
use File::Spec;

our @EXPORT_OK = qw(valgrind_enabled valgrind_command valgrind_slowdown
                    valgrind_reports valgrind_summary);

sub env_on {
    my ($v) = @_;
    return defined $v && $v ne '' && $v ne '0';
}

our $Enabled  = env_on($ENV{TEST_NGINX_USE_VALGRIND}) ? 1 : 0;
our $Slowdown = ($ENV{TEST_NGINX_VALGRIND_SLOWDOWN} // '') =~ /^(\d+(?:\.\d+)?)$/
                ? $1 : 10;

our $Ours = defined $ENV{TEST_NGINX_VALGRIND_OURS}
            && $ENV{TEST_NGINX_VALGRIND_OURS} ne ''
    ? qr/$ENV{TEST_NGINX_VALGRIND_OURS}/
    : qr{\bngx_http_shopify_\w+|ngx_http_shopify_module\.so|libhiredis};

# Headlines of the reports that count as errors.  Other reports that carry
# a stack (valgrind warnings) are shown only.
our $ErrorKinds = qr{
      ^Invalid\ (?:read|write|free)
    | uninitialised
    | ^Conditional\ jump
    | \bare\ (?:definitely|indirectly)\ lost\b
    | ^Mismatched\ free
    | ^Source\ and\ destination\ overlap
    | ^Process\ terminating\ with\ default\ action\ of\ signal\ \d+\ \(SIG(?:SEGV|BUS|ABRT|FPE|ILL)\)
}x;

# t/valgrind.suppress, found from this file (t/lib/Test/Nginx/).
our $SuppressFile = Cwd::abs_path(File::Spec->catfile(
    File::Basename::dirname(File::Spec->rel2abs(__FILE__)),
    File::Spec->updir, File::Spec->updir, File::Spec->updir,
    'valgrind.suppress')) // '';

sub valgrind_enabled  { $Enabled }
sub valgrind_slowdown { $Enabled ? $Slowdown : 1 }

# The argv prefix that runs a program under memcheck, logging to
# <log_dir>/valgrind-<pid>.log (one file per process: forked nginx
# workers get their own).  $children: also follow exec'd children.
#
# --keep-debuginfo=yes is needed for the leak report: nginx dlclose()s
# dynamic modules when the cycle pool goes away at exit, before valgrind
# looks for leaks, and without it every frame in our module prints as
# "???" with no object name, which nothing could recognise as ours.
sub valgrind_command {
    my ($log_dir, $children) = @_;
    my @cmd = (
        'valgrind', '--tool=memcheck', '--leak-check=full',
        '--show-leak-kinds=definite,indirect', '--num-callers=30',
        '--track-origins=yes', '--keep-debuginfo=yes',
        "--log-file=$log_dir/valgrind-%p.log",
    );
    push @cmd, '--trace-children=yes' if $children;
    push @cmd, "--suppressions=$SuppressFile" if -f $SuppressFile;
    return @cmd;
}

# Reports in one log file.  Each is
#     { pid, file, head => headline, text => the paragraph,
#       error => 1 for an error kind, ours => 1 when a frame is ours,
#       sig => the report without addresses, sizes and counts, to spot
#       the same report from another process }
# and a pseudo-report { incomplete => 1 } when the log has no
# "ERROR SUMMARY", i.e. the process never reached its exit (killed), so
# no leak check ran.
sub valgrind_reports {
    my ($file) = @_;
    open my $fh, '<', $file or return ({
        file => $file, incomplete => 1, error => 1, ours => 0,
        head => "cannot read $file: $!", text => '',
    });

    my (@reports, @para, $pid, $finished);
    my $flush = sub {
        return unless @para;
        my @lines = @para;
        @para = ();
        my @frames = grep { /^\s+(?:at|by) 0x[0-9A-Fa-f]+:/ } @lines;
        return unless @frames;
        my $head = $lines[0];
        $head =~ s/^\s+|\s+$//g;
        (my $sig = $head) =~ s/\d[\d,]*/N/g;
        $sig = join "\n", $sig, map { (my $f = $_) =~ s/0x[0-9A-Fa-f]+//g; $f }
                                 @frames;
        push @reports, {
            sig   => $sig,
            pid   => $pid,
            file  => $file,
            head  => $head,
            text  => join('', map { "$_\n" } @lines),
            error => ($head =~ $ErrorKinds ? 1 : 0),
            ours  => ((grep { $_ =~ $Ours } @frames) ? 1 : 0),
        };
    };

    while (my $line = <$fh>) {
        chomp $line;
        # "==pid== text"; "--pid--" lines are valgrind's own chatter.
        next unless $line =~ /^==(\d+)==(?: (.*))?$/;
        $pid = $1;
        my $text = $2 // '';
        $finished = 1 if $text =~ /^ERROR SUMMARY:/;
        if ($text =~ /^\s*$/) {
            $flush->();
        } else {
            push @para, $text;
        }
    }
    $flush->();
    close $fh;

    push @reports, {
        pid => $pid, file => $file, incomplete => 1, error => 1, ours => 0,
        head => "valgrind log $file has no ERROR SUMMARY: the process was"
                . " killed before valgrind's exit checks ran",
        text => '',
    } unless $finished;

    return @reports;
}

# Reads the logs; returns (\@ours, \@others, \@incomplete), where @others
# holds the error reports not from our code and @incomplete the logs that
# never got their leak check.
sub valgrind_summary {
    my (@files) = @_;
    my (@ours, @others, @incomplete);
    for my $file (@files) {
        for my $r (valgrind_reports($file)) {
            if ($r->{incomplete}) { push @incomplete, $r; next }
            next unless $r->{error};
            push @{ $r->{ours} ? \@ours : \@others }, $r;
        }
    }
    return (\@ours, \@others, \@incomplete);
}

1;

package Test::Nginx::Socket;

# A small runner for test files written in the Test::Nginx::Socket block
# format, built on Debian's Test::Base, Test::More, HTTP::Response,
# Test::LongString, Text::Diff, IPC::Run and List::MoreUtils.
#
#     use Test::Nginx::Socket 'no_plan';          # or: plan tests => ...
#     repeat_each(2);
#     run_tests();
#     __DATA__
#     === TEST 1: title
#     --- config
#     location = /t { return 200 "ok\n"; }
#     --- request
#     GET /t
#     --- response_body
#     ok
#
# For every block the runner writes t/servroot/conf/nginx.conf, starts
# nginx, sends the request(s) over a plain TCP socket, checks the
# response and the lines the block added to error.log, and stops nginx
# again.  Blocks run in file order.  Any section name the runner does not
# know stops the run (BAIL_OUT), so an unsupported feature is never
# silently ignored.  Server-side details are in Test::Nginx::Util.
#
# With TEST_NGINX_USE_VALGRIND set, nginx runs under valgrind's memcheck
# and every block gets one more test, "<file> TEST N: title - valgrind
# clean", which fails when valgrind reported an error or leak with a stack
# frame in our module (Test::Nginx::Valgrind says which frames count).
# "plan tests => N" is raised by the number of blocks to match.

use strict;
use warnings;

our $VERSION = '0.01';

use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();
use List::MoreUtils qw(any);
use List::Util ();
use POSIX qw(EAGAIN EINTR EWOULDBLOCK);
use Scalar::Util ();
use Test::Base ();
use Test::Base::Filter ();
use Test::LongString ();
use Test::More import => [qw(ok is like unlike pass fail diag)];
use Text::Diff ();
use Time::HiRes ();

use Test::Nginx::Util qw(
    :preamble parse_time expand_env write_config setup_server_root
    reset_html_dir write_user_files start_nginx stop_nginx
    mark_error_log new_error_log_lines block_log_tail check_valgrind
);

# What a test file gets besides all of Test::More.
our @EXPORT = qw(
    run_tests blocks is_string is_str
    repeat_each no_long_string log_level master_on master_off
    master_process_enabled workers worker_connections env_to_nginx
    no_root_location no_shuffle html_dir server_root server_port
    add_block_preprocessor bail_out
);

# Every section a block may carry.  Anything else is a bail-out.
my %KnownSection = map { $_ => 1 } qw(
    config http_config main_config post_main_config server_name
    request more_headers raw_request pipelined_requests
    error_code error_code_like
    response_body response_body_like response_body_unlike
    response_headers response_headers_like
    raw_response_headers_like raw_response_headers_unlike
    error_log no_error_log grep_error_log grep_error_log_out
    timeout abort wait ignore_response user_files log_level init
    ONLY SKIP LAST
);

# Keys Test::Base keeps in a block hash next to the sections.
my %BlockInternal = map { $_ => 1 } qw(
    name description seq_num is_filtered blocks_object original_values
);

# Sections in which $TEST_NGINX_* variables are replaced.
my @ExpandedSections = qw(
    config http_config main_config post_main_config
    request more_headers raw_request pipelined_requests
    response_body response_body_like response_body_unlike
    response_headers response_headers_like error_log no_error_log
);


# ---------------------------------------------------------------------
# Block parsing: Test::Base does the work.  It is used as a plain parser
# object, so none of its exports, source filters or END-time behaviour
# reach the test file.
# ---------------------------------------------------------------------

package Test::Nginx::Socket::Spec;
our @ISA = ('Test::Base');

# Test::Base looks for "<parser class>::Filter" before its own filters.
package Test::Nginx::Socket::Spec::Filter;
our @ISA = ('Test::Base::Filter');

# The stock "eval" filter returns $@ as the section value when the code
# dies, which would turn a typo into a confusing assertion.  This one
# evaluates in package main (where the preamble's variables live) and
# dies instead; run_tests() turns that into a bail-out.
sub eval {
    my ($self, @input) = @_;
    $self->assert_scalar(@input);
    my @value = CORE::eval("package main;\n$input[0]");
    die "eval filter failed: $@" if $@;
    return @value;
}

package Test::Nginx::Socket;

my $Spec;
my $DeferredPlan;   # valgrind mode: "use ... tests => N" before blocks

sub spec {
    return $Spec if $Spec;

    my $fh = Scalar::Util::openhandle(\*main::DATA)
        or bail_out("$0 has no __DATA__ section with test blocks");
    my $text = do { local $/; <$fh> };

    $Spec = Test::Nginx::Socket::Spec->new;
    $Spec->spec($text);
    return $Spec;
}

# In scalar context: how many blocks will run (after ONLY/SKIP/LAST),
# for "plan tests => repeat_each() * (blocks() * N)".  In list context:
# the blocks, with their section filters (eval, chomp...) applied.
sub blocks {
    my $list = spec()->block_list;
    return scalar @$list unless wantarray;

    for my $block (@$list) {
        next if $block->is_filtered;
        CORE::eval { $block->run_filters; 1 }
            or bail_out("$0 " . $block->name . " - $@");
    }
    return @$list;
}


# ---------------------------------------------------------------------
# import
# ---------------------------------------------------------------------

sub import {
    my ($class, @plan) = @_;
    my $caller = caller;

    # Test files get strict and warnings, as with upstream.
    strict->import;
    warnings->import;

    no strict 'refs';
    for my $sym (@Test::More::EXPORT) {
        next if $sym eq 'plan';     # ours, below
        if ($sym =~ /^\$(\w+)$/) {
            *{"${caller}::$1"} = \${"Test::More::$1"};
        } else {
            *{"${caller}::$sym"} = \&{"Test::More::$sym"};
        }
    }
    for my $sym (@EXPORT) {
        *{"${caller}::$sym"} = \&{__PACKAGE__ . "::$sym"};
    }
    *{"${caller}::plan"} = \&plan;

    # use Test::Nginx::Socket 'no_plan';  use ... tests => 10;
    # Under valgrind a test count waits for run_tests(): the blocks, which
    # each add a test, cannot be counted before __DATA__ is readable.
    if ($Test::Nginx::Util::UseValgrind && @plan == 2
        && $plan[0] eq 'tests')
    {
        $DeferredPlan = $plan[1];
    } elsif (@plan) {
        Test::More::plan(@plan);
    }
}

# Test::More's plan(), except that in valgrind mode "tests => N" gets one
# more test per block (the "valgrind clean" one).
sub plan {
    my (@plan) = @_;
    if ($Test::Nginx::Util::UseValgrind && @plan == 2
        && $plan[0] eq 'tests')
    {
        $plan[1] += scalar blocks();
    }
    return Test::More::plan(@plan);
}

sub is_string { Test::LongString::is_string($_[0], $_[1], $_[2]) }
sub is_str    { compare_text(@_) }


# ---------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------

our $Builder = Test::More->builder;

# Tests emitted beyond the counted ones (crash reports and the like),
# so the per-block count check below does not complain about them.
my $Extra = 0;

sub sec {
    my ($block, $name) = @_;
    my $v = $block->{$name};
    return ref $v eq 'ARRAY' ? $v->[0] : undef;
}

sub trim {
    my ($s) = @_;
    return undef unless defined $s;
    $s =~ s/^\s+|\s+$//g;
    return $s;
}

# Printable, one-line form of a pattern or string for test names.
sub show {
    my ($s, $max) = @_;
    $s = "$s";
    $s =~ s/\\/\\\\/g;
    $s =~ s/\n/\\n/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\t/\\t/g;
    $s =~ s/"/\\"/g;
    $s = substr($s, 0, $max) . '...' if $max && length $s > $max;
    return $s;
}

# Exact comparison; multi-line mismatches get a unified diff, short or
# single-line ones Test::More's got/expected.
sub compare_text {
    my ($got, $expected, $name) = @_;

    if (!defined $got || !defined $expected || $got eq $expected
        || $expected !~ /\n./s)
    {
        return is($got, $expected, $name);
    }

    ok(0, $name);
    diag(Text::Diff::diff(\$expected, \$got,
                          { FILENAME_A => 'expected', FILENAME_B => 'got' }));
    return 0;
}

sub compare_body {
    my ($got, $expected, $name) = @_;
    return compare_text($got, $expected, $name)
        if $Test::Nginx::Util::NoLongString;
    return Test::LongString::is_string($got, $expected, $name);
}

# The value for request $idx of a section that may hold one value per
# request.  With several requests an array is required, as upstream.
sub indexed {
    my ($name, $section, $value, $idx, $need_array) = @_;

    return $value unless defined $value;

    if ($need_array) {
        bail_out("$name - the block sends several requests, so"
                 . " --- $section must be an array (use eval)")
            unless ref $value eq 'ARRAY';
        bail_out("$name - --- $section has no entry for request $idx")
            if $idx > $#$value;
        return $value->[$idx];
    }

    return ref $value eq 'ARRAY' ? $value->[0] : $value;
}

# error_log / no_error_log value -> list of strings and regexes.
sub patterns {
    my ($value) = @_;
    return () unless defined $value;
    return ($value) if ref $value eq 'Regexp';
    return grep { defined && (ref || length) } @$value
        if ref $value eq 'ARRAY';
    return grep { length } split /\n+/, $value;
}

# A section's pattern as a regex; a bad one stops the run with the
# block and section named instead of dying somewhere inside a check.
sub compile_re {
    my ($name, $section, $src, $flags) = @_;
    return $src if ref $src eq 'Regexp';
    $flags //= '';
    my $re = CORE::eval { $flags ne '' ? qr/(?$flags)$src/ : qr/$src/ };
    bail_out("$name - --- $section: bad regex \"$src\": $@")
        unless defined $re;
    return $re;
}

sub pattern_matches {
    my ($pat, $line) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

# "Key: value" lines of response_headers(_like); "!Key" -> absent.
sub header_spec {
    my ($text) = @_;
    my @out;
    return @out unless defined $text;

    for my $line (split /\n/, $text) {
        $line = trim($line);
        next if $line eq '';

        if ($line =~ s/^!\s*//) {
            $line =~ s/\s*:.*//;
            push @out, [$line, undef];
            next;
        }

        my ($key, $val) = split /\s*:\s*/, $line, 2;
        push @out, [$key, $val // ''];
    }
    return @out;
}


# ---------------------------------------------------------------------
# Building requests
# ---------------------------------------------------------------------

# more_headers text -> ("Key: value\r\n"..., sends-chunked-body flag)
sub format_more_headers {
    my ($text) = @_;
    my ($out, $chunked) = ('', 0);
    return ($out, $chunked) unless defined $text;

    for my $line (split /\n+/, $text) {
        next if $line =~ /^\s*#/ || $line !~ /\S/;
        my ($key, $val) = split /:\s*/, $line, 2;
        $val //= '';
        $val =~ s/\s+\z//;
        $chunked = 1 if lc $key eq 'transfer-encoding' && $val =~ /chunked/i;
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# One "request" value (a string, or an array of packets: strings or
# { value => ..., delay_before => seconds }) -> the packets to send.
#
# The text is "METHOD [URI [PROTO]]" on the first line (leading blank
# and "#" lines are dropped), then the body.  Host, Connection and
# Content-Length are added unless more_headers has them; when
# Content-Length is added the body loses its leading and trailing
# whitespace.  Packet boundaries that fall in the body are kept; any in
# the request line move to the end of the generated header.
sub build_request {
    my ($name, $req, $more, $conn, $host) = @_;

    my @packets = map {
        ref $_ eq 'HASH' ? { %$_ } : { value => $_ }
    } (ref $req eq 'ARRAY' ? @$req : ($req));

    bail_out("$name - empty request") unless @packets;

    my $text = join '', map { $_->{value} // '' } @packets;

    my ($skip) = $text =~ /\A((?:\s*#[^\n]*(?:\n|\z))*\s*)/;
    my $line_start = length $skip;
    my ($line, $eol) = substr($text, $line_start) =~ /\A([^\n]*)(\n?)/;
    my $body_start = $line_start + length($line) + length($eol);
    $line =~ s/\r\z//;

    my @words = split ' ', $line;
    bail_out("$name - request line must be \"METHOD [URI [PROTO]]\","
             . " not \"" . show($line) . "\"")
        if @words < 1 || @words > 3;
    my ($method, $uri, $proto) = @words;
    $uri   //= '/';
    $proto //= 'HTTP/1.1';

    my ($hdrs, $chunked) = format_more_headers($more);
    my $body = substr $text, $body_start;
    my $lead = 0;

    if (!$chunked && $body ne '' && $hdrs !~ /^Content-Length:/mi) {
        ($lead) = map { length } $body =~ /\A(\s*)/;
        $body =~ s/^\s+|\s+$//g;
        $hdrs .= "Content-Length: " . length($body) . "\r\n";
    }

    my $head = "$method $uri $proto\r\n";
    $head .= "Host: $host\r\n" unless $hdrs =~ /^Host:/mi;
    $head .= "Connection: $conn\r\n" unless $hdrs =~ /^Connection:/mi;
    $head .= "$hdrs\r\n";

    my $wire = $head . $body;

    # Map each original packet end onto the rewritten request.
    my @cuts;
    my $end = 0;
    for my $p (@packets[0 .. $#packets - 1]) {
        $end += length($p->{value} // '');
        my $in_body = $end - $body_start - $lead;
        $in_body = 0 if $in_body < 0;
        $in_body = length $body if $in_body > length $body;
        push @cuts, length($head) + $in_body;
    }
    push @cuts, length $wire;

    my $from = 0;
    for my $i (0 .. $#packets) {
        $packets[$i]{value} = substr $wire, $from, $cuts[$i] - $from;
        $from = $cuts[$i];
    }

    return {
        packets => \@packets,
        head    => $method eq 'HEAD',
        close   => ($head =~ /^Connection:\s*close\b/mi ? 1 : 0),
    };
}

# All connections a block opens, in order.  Each is
#     { packets => [...], heads => [HEAD flag per response],
#       close => server is asked to close }
# need_array says whether expectations must be given per request.
sub build_exchanges {
    my ($name, $v) = @_;
    my $host = trim($v->{server_name}) // 'localhost';
    my $more = $v->{more_headers};

    my $more_for = sub {
        my ($i) = @_;
        return $more unless ref $more eq 'ARRAY';
        bail_out("$name - --- more_headers has no entry for request $i")
            if $i > $#$more;
        return $more->[$i];
    };

    if (defined $v->{raw_request}) {
        my $raw = $v->{raw_request};
        my @packets = map {
            ref $_ eq 'HASH' ? { %$_ } : { value => $_ }
        } (ref $raw eq 'ARRAY' ? @$raw : ($raw));
        my $all = join '', map { $_->{value} // '' } @packets;
        return ([{
            packets => \@packets,
            heads   => [$all =~ /\A\s*HEAD\s/ ? 1 : 0],
            close   => ($all =~ /^Connection:\s*close\b/mi ? 1 : 0),
        }], 0);
    }

    if (defined $v->{pipelined_requests}) {
        my $reqs = $v->{pipelined_requests};
        bail_out("$name - --- pipelined_requests must be an array"
                 . " of requests (use eval)")
            unless ref $reqs eq 'ARRAY' && @$reqs;

        my $wire = '';
        my ($close, @heads);
        for my $i (0 .. $#$reqs) {
            my $conn = $i == $#$reqs ? 'close' : 'keep-alive';
            my $r = build_request($name, $reqs->[$i], $more_for->($i),
                                  $conn, $host);
            $wire .= join '', map { $_->{value} } @{ $r->{packets} };
            push @heads, $r->{head};
            $close = $r->{close};
        }
        return ([{
            packets => [{ value => $wire }],
            heads   => \@heads,
            close   => $close,
        }], 1);
    }

    my $req = $v->{request};
    bail_out("$name - no --- request, --- raw_request or"
             . " --- pipelined_requests section") unless defined $req;

    my @reqs = ref $req eq 'ARRAY' ? @$req : ($req);
    bail_out("$name - --- request eval gave an empty array") unless @reqs;

    my @exchanges;
    for my $i (0 .. $#reqs) {
        bail_out("$name - request $i must be a string or an array of"
                 . " packets") if ref $reqs[$i] && ref $reqs[$i] ne 'ARRAY';
        my $r = build_request($name, $reqs[$i], $more_for->($i),
                              'close', $host);
        push @exchanges, {
            packets => $r->{packets},
            heads   => [$r->{head}],
            close   => $r->{close},
        };
    }
    return (\@exchanges, @reqs > 1 ? 1 : 0);
}


# ---------------------------------------------------------------------
# Talking to nginx
# ---------------------------------------------------------------------

# Send the packets on one connection and collect what comes back.
# Reading stops at end-of-file, at the deadline, or - when the server
# was not asked to close - as soon as every expected response is
# complete.  Writes and reads are interleaved, so a server that answers
# early (413) and closes does not wedge the client.
sub exchange {
    my ($x, $timeout) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    my $addr = $Test::Nginx::Util::ServerAddr;
    my $port = $Test::Nginx::Util::ClientPort;

    my $sock;
    while (1) {
        $sock = IO::Socket::INET->new(
            PeerAddr => $addr,
            PeerPort => $port,
            Proto    => 'tcp',
            Timeout  => $timeout,
        );
        last if $sock || Time::HiRes::time() >= $deadline;
        Time::HiRes::sleep(0.05);
    }

    return { raw => '', error => "cannot connect to $addr:$port: $!" }
        unless $sock;

    $sock->blocking(0);
    local $SIG{PIPE} = 'IGNORE';

    my @queue = @{ $x->{packets} };
    my ($pending, $send_at);
    my %r = (raw => '');

    while (1) {
        my $now = Time::HiRes::time();
        if ($now >= $deadline) {
            $r{timed_out} = 1;
            last;
        }

        if (!defined $pending && @queue) {
            my $p = shift @queue;
            $pending = $p->{value} // '';
            $send_at = $now + ($p->{delay_before} // 0);
        }

        my $can_send = defined $pending && $now >= $send_at;
        my $wait = $deadline - $now;
        $wait = $send_at - $now if defined $pending && !$can_send
                                   && $send_at - $now < $wait;

        my ($readable, $writable) = IO::Select->select(
            IO::Select->new($sock),
            $can_send ? IO::Select->new($sock) : undef,
            undef, $wait);

        if ($readable && @$readable) {
            my $n = sysread $sock, my $buf, 65536;
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                # A reset after the response still leaves the response.
                $r{read_error} = "$!";
                last;
            }
            last if $n == 0;
            $r{raw} .= $buf;

            if (!$x->{close} && !defined $pending && !@queue) {
                my @res = parse_responses($r{raw}, $x->{heads}, 0);
                last if @res == @{ $x->{heads} }
                        && !grep { !$_->{complete} } @res;
            }
        }

        if ($writable && @$writable && defined $pending) {
            my $n = syswrite $sock, $pending;
            if (defined $n) {
                substr($pending, 0, $n) = '';
                undef $pending if $pending eq '';
            } elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                $r{write_error} = "$!";
                undef $pending;
                @queue = ();
            }
        }
    }

    close $sock;
    return \%r;
}

# Split a byte stream into HTTP responses.  $heads has one flag per
# expected response (HEAD request: no body).  Each result is
#     { res => HTTP::Response (body decoded), raw_headers => text,
#       complete => 0/1, problem => why it is incomplete or broken }
# $at_eof says the stream is finished, so a body delimited by the end
# of the connection is complete.
sub parse_responses {
    my ($raw, $heads, $at_eof) = @_;
    my @out;
    my $pos = 0;

    for my $i (0 .. $#$heads) {
        last if $pos >= length $raw && $i > 0;
        my $r = parse_one_response($raw, \$pos, $heads->[$i], $at_eof);
        push @out, $r;
        last unless $r->{complete};
    }

    if (@out == @$heads && $out[-1]{complete} && $pos < length $raw) {
        $out[-1]{extra} = substr $raw, $pos;
    }
    return @out;
}

sub parse_one_response {
    my ($raw, $pos_ref, $is_head, $at_eof) = @_;
    my $pos = $$pos_ref;
    my ($head, $res);

    # Skip interim 1xx responses (100 Continue), except 101.
    while (1) {
        my $end = index $raw, "\r\n\r\n", $pos;
        if ($end < 0) {
            my $partial = substr $raw, $pos;
            return {
                res => length $partial
                       ? HTTP::Response->parse($partial) : undef,
                raw_headers => $partial,
                complete => 0,
                problem => length $partial
                           ? "response header is incomplete"
                           : "no response received",
            };
        }
        $head = substr $raw, $pos, $end + 2 - $pos;
        $pos = $end + 4;
        $res = HTTP::Response->parse($head);
        my $code = $res->code;
        $res->code(undef) if defined $code && $code !~ /^\d{3}$/;
        last unless defined $res->code && $res->code =~ /^1\d\d$/
                    && $res->code != 101;
    }

    my $code = $res->code // 0;
    my $te = $res->header('Transfer-Encoding') // '';
    my $cl = $res->header('Content-Length');
    my %r = (res => $res, raw_headers => $head, complete => 1);

    if ($is_head || $code =~ /^1/ || $code == 204 || $code == 304) {
        $res->content('');

    } elsif ($te =~ /\bchunked\b/i) {
        my ($body, $problem) = ('', undef);
        while (1) {
            pos($raw) = $pos;
            if ($raw !~ /\G([0-9A-Fa-f]+)[^\r\n]*\r\n/gc) {
                $problem = $pos >= length $raw
                    ? "chunked body ended before the last chunk"
                    : "bad chunk size line at \""
                      . show(substr($raw, $pos, 20)) . "\"";
                last;
            }
            my $size = hex $1;
            $pos = pos $raw;

            if ($size == 0) {
                # Optional trailers, then the empty line.
                my $end = index $raw, "\r\n", $pos;
                while ($end > $pos) {
                    $pos = $end + 2;
                    $end = index $raw, "\r\n", $pos;
                }
                if ($end < 0) {
                    $problem = "chunked body lacks its final CRLF";
                } else {
                    $pos = $end + 2;
                }
                last;
            }

            if (length($raw) - $pos < $size + 2) {
                $body .= substr $raw, $pos;
                $pos = length $raw;
                $problem = "chunked body ended inside a chunk";
                last;
            }

            $body .= substr $raw, $pos, $size;
            $pos += $size;
            if (substr($raw, $pos, 2) ne "\r\n") {
                $problem = "chunk data not followed by CRLF";
                last;
            }
            $pos += 2;
        }
        $res->content($body);
        if (defined $problem) {
            $r{complete} = 0;
            $r{problem} = $problem;
        }

    } elsif (defined $cl && $cl =~ /^\s*(\d+)\s*$/) {
        my $len = $1;
        my $got = substr $raw, $pos, $len;
        $pos += length $got;
        $res->content($got);
        if (length $got < $len) {
            $r{complete} = 0;
            $r{problem} = "body truncated: Content-Length $len, got "
                          . length($got) . " bytes";
        }

    } else {
        # Delimited by the end of the connection.
        $res->content(substr $raw, $pos);
        $pos = length $raw;
        if (!$at_eof) {
            $r{complete} = 0;
            $r{problem} = "body not finished before the connection"
                          . " stopped";
        }
    }

    $$pos_ref = $pos;
    return \%r;
}


# ---------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------

sub check_status {
    my ($name, $v, $res, $problem, $idx, $need_array) = @_;
    my $code = ($res && defined $res->code) ? $res->code : '';
    my $title = "$name - status code ok";

    if (defined $problem) {
        fail($title);
        diag("$name - $problem");
        return;
    }

    if (defined $v->{error_code_like}) {
        my $pat = indexed($name, 'error_code_like', $v->{error_code_like},
                          $idx, $need_array);
        $pat = trim($pat) unless ref $pat;
        like($code, compile_re($name, 'error_code_like', $pat, 'sm'),
             $title);

    } elsif (defined $v->{error_code}) {
        my $want = indexed($name, 'error_code', $v->{error_code},
                           $idx, $need_array);
        is($code, trim($want), $title);

    } else {
        is($code, 200, $title);
    }
}

sub check_raw_headers {
    my ($name, $v, $raw_headers, $idx, $need_array) = @_;
    $raw_headers //= '';

    for my $kind ('like', 'unlike') {
        my $section = "raw_response_headers_$kind";
        next unless defined $v->{$section};
        my $pat = indexed($name, $section, $v->{$section}, $idx,
                          $need_array);
        my $re = compile_re($name, $section, $pat, 's');
        my $cmp = $kind eq 'like' ? \&like : \&unlike;
        $cmp->($raw_headers, $re, "$name - raw response headers $kind");
    }
}

sub header_value {
    my ($res, $key) = @_;
    return undef unless $res;
    return scalar $res->header($key);
}

sub check_headers {
    my ($name, $v, $res, $idx, $need_array) = @_;
    my $port = $Test::Nginx::Util::ServerPort;

    if (defined $v->{response_headers}) {
        my $spec = indexed($name, 'response_headers',
                           $v->{response_headers}, $idx, $need_array);

        for my $h (header_spec($spec)) {
            my ($key, $want) = @$h;
            my $got = header_value($res, $key);

            if (!defined $want || $want eq '') {
                # "!Key" and "Key:" both say the header must not be sent
                # (an empty value counts as not sent, as upstream).
                ok(!defined $got || $got eq '',
                   "$name - header $key absent")
                    or diag("$name - $key: $got");
                next;
            }

            $want =~ s/\$ServerPort\b/$port/g;
            is($got // '', $want, "$name - header $key ok");
        }

    } elsif (defined $v->{response_headers_like}) {
        my $spec = indexed($name, 'response_headers_like',
                           $v->{response_headers_like}, $idx, $need_array);

        for my $h (header_spec($spec)) {
            my ($key, $pat) = @$h;
            $pat //= '';
            my $re = compile_re($name, 'response_headers_like',
                                "^$pat\$");
            like(header_value($res, $key) // '', $re,
                 "$name - header $key like ok");
        }
    }
}

sub check_body {
    my ($name, $v, $res, $repeat, $idx, $need_array) = @_;
    my $body = $res ? $res->content : undef;
    my $where = "(repeat $repeat, req $idx)";

    if (defined $v->{response_body}) {
        my $want = indexed($name, 'response_body', $v->{response_body},
                           $idx, $need_array);

        if (ref $want eq 'Regexp') {
            like($body // '', $want,
                 "$name - response_body - like $where");
            return;
        }

        my $port = $Test::Nginx::Util::ServerPort;
        $want =~ s/\$ServerPort\b/$port/g if defined $want;
        compare_body($body, $want,
                     "$name - response_body - response is expected"
                     . " $where");
        return;
    }

    for my $kind ('like', 'unlike') {
        my $section = "response_body_$kind";
        next unless defined $v->{$section};
        my $pat = indexed($name, $section, $v->{$section}, $idx,
                          $need_array);
        my $re = compile_re($name, $section, $pat, 's');
        my $cmp = $kind eq 'like' ? \&like : \&unlike;
        $cmp->($body // '', $re,
               "$name - $section - response is expected ("
               . show(trim($body // ''), 60) . ")");
        # Like upstream, _like wins when both are given.
        return;
    }
}

# Look at the error.log lines written since the previous look.
sub check_error_log {
    my ($name, $v, $repeat, $label) = @_;
    my $lines = new_error_log_lines();

    if (defined $v->{grep_error_log}) {
        my $pat = $v->{grep_error_log};
        $pat = $pat->[$repeat] if ref $pat eq 'ARRAY';
        my $want = $v->{grep_error_log_out};
        bail_out("$name - --- grep_error_log needs --- grep_error_log_out")
            unless defined $want;
        $want = $want->[$repeat] if ref $want eq 'ARRAY';

        my $got = '';
        for my $line (@$lines) {
            my $hit = ref $pat ? $line =~ $pat : $line =~ /\Q$pat\E/;
            next unless $hit;
            my $m = substr $line, $-[0], $+[0] - $-[0];
            $got .= "$m\n" unless $m =~ /\n/;
        }

        my $title = "$name - grep_error_log_out $label";
        if (ref $want eq 'Regexp') {
            like($got, $want, $title);
        } else {
            compare_body($got, $want, $title);
        }

    } elsif (defined $v->{grep_error_log_out}) {
        bail_out("$name - --- grep_error_log_out needs --- grep_error_log");
    }

    for my $pat (patterns($v->{error_log})) {
        my $hit = grep { pattern_matches($pat, $_) } @$lines;
        ok($hit,
           "$name - error.log has \"" . show($pat) . "\" $label");
    }

    for my $pat (patterns($v->{no_error_log})) {
        my @hits = grep { pattern_matches($pat, $_) } @$lines;
        ok(!@hits,
           "$name - error.log lacks \"" . show($pat) . "\" $label")
            or diag(join '', map { "    $_" } grep { defined }
                                               @hits[0 .. 2]);
    }

    # Serious lines nobody asked about still deserve a look.
    my $named = join "\n", map { "$_" }
                patterns($v->{error_log}), patterns($v->{no_error_log});
    for my $level (qw(alert crit emerg)) {
        next if index($named, "[$level") >= 0;
        for my $line (grep { /\[$level\]/ } @$lines) {
            chomp(my $l = $line);
            diag("WARNING: $name - $l");
        }
    }

    for my $line (grep { /\bAssertion .*failed/ } @$lines) {
        chomp(my $l = $line);
        $Extra++;
        fail("$name - $l");
    }
}


# ---------------------------------------------------------------------
# Running blocks
# ---------------------------------------------------------------------

# How many tests one repeat of a block emits (must match what
# run_repeat() does, or "plan tests => ..." breaks):
#     per request: 1 status (unless ignore_response) + 1 per raw header
#                  pattern + 1 per response header line + 1 body check
#     per request: 1 per error_log / no_error_log pattern
#                  + 1 for grep_error_log_out
sub count_tests {
    my ($v, $nreq, $need_array) = @_;
    my $n = 0;

    for my $i (0 .. $nreq - 1) {
        if (!defined $v->{ignore_response}) {
            $n++;
            $n++ for grep { defined $v->{"raw_response_headers_$_"} }
                     qw(like unlike);
            my $hs = defined $v->{response_headers}
                     ? $v->{response_headers}
                     : $v->{response_headers_like};
            if (defined $hs) {
                my $spec = $need_array && ref $hs eq 'ARRAY' ? $hs->[$i]
                         : ref $hs eq 'ARRAY' ? $hs->[0] : $hs;
                $n += () = header_spec($spec);
            }
            my @bodies = qw(response_body response_body_like
                            response_body_unlike);
            $n++ if any { defined($v->{$_}) } @bodies;
        }

        $n += () = patterns($v->{error_log});
        $n += () = patterns($v->{no_error_log});
        $n++ if defined $v->{grep_error_log};
    }
    return $n;
}

sub check_sections {
    my ($block) = @_;
    for my $key (sort keys %$block) {
        next if $key =~ /^_/ || $BlockInternal{$key} || $KnownSection{$key};
        bail_out("$0 " . $block->name . " - unknown section --- $key"
                 . " (not supported by this runner)");
    }
}

sub run_init {
    my ($name, $code) = @_;
    (my $file = $name) =~ s/["\n]//g;
    my $ok = CORE::eval("package main;\n#line 1 \"$file --- init\"\n"
                        . "$code\n;1");
    bail_out("$name - --- init failed: $@") unless $ok;
}

sub run_repeat {
    my ($name, $v, $repeat) = @_;
    my ($exchanges, $need_array) = build_exchanges($name, $v);

    my $timeout = parse_time($v->{timeout})
                  // parse_time($Test::Nginx::Util::Timeout);
    my $abort  = defined $v->{abort};
    my $ignore = defined $v->{ignore_response};
    my $wait   = parse_time($v->{wait});
    my $idx    = 0;

    for my $x (@$exchanges) {
        my $got = exchange($x, $timeout);
        my @res = parse_responses($got->{raw}, $x->{heads},
                                  !$got->{timed_out});

        for my $k (0 .. $#{ $x->{heads} }) {
            my $r = $res[$k] // { problem => "no response received" };
            my $problem;

            if (defined $got->{error}) {
                $problem = $got->{error};
            } elsif (!$r->{complete} && !$abort) {
                $problem = $got->{timed_out}
                    ? "timed out after ${timeout}s waiting for the"
                      . " response ($r->{problem}); use --- abort if the"
                      . " timeout is expected"
                    : $r->{problem};
                $problem .= " (write failed: $got->{write_error})"
                    if $got->{write_error};
            }

            if (!$ignore) {
                my $res = $r->{res};
                check_status($name, $v, $res, $problem, $idx, $need_array);
                check_raw_headers($name, $v, $r->{raw_headers}, $idx,
                                  $need_array);
                check_headers($name, $v, $res, $idx, $need_array);
                check_body($name, $v, $res, $repeat, $idx, $need_array);

                if (defined $r->{extra} && !$need_array) {
                    diag("WARNING: $name - extra bytes after the"
                         . " response: \"" . show($r->{extra}, 200) . "\"");
                }

            } elsif (defined $problem
                     && ($got->{timed_out} || defined $got->{error}))
            {
                $Extra++;
                fail("$name - request $idx finished");
                diag("$name - $problem");
            }

            # The log is looked at after every request, as upstream
            # does; each look sees only lines it has not seen before.
            my $label = $need_array ? "(repeat $repeat, req $idx)"
                                    : "(repeat $repeat)";
            Time::HiRes::sleep($wait) if $wait;
            check_error_log($name, $v, $repeat, $label);
            $idx++;
        }
    }
}

sub run_block {
    my ($block, $is_last) = @_;
    my $name = "$0 " . $block->name;

    # Section values with $TEST_NGINX_* replaced, once per block, so all
    # repeats see the same random ports.
    my %v;
    my $ports = {};
    for my $s (keys %KnownSection) {
        $v{$s} = sec($block, $s);
    }
    for my $s (@ExpandedSections) {
        $v{$s} = expand_env($v{$s}, $name, $s, $ports);
    }

    write_config(
        name             => $name,
        config           => $v{config},
        http_config      => $v{http_config},
        main_config      => $v{main_config},
        post_main_config => $v{post_main_config},
        server_name      => trim($v{server_name}),
        log_level        => trim($v{log_level}),
    );

    reset_html_dir();
    write_user_files($name, $v{user_files}) if defined $v{user_files};

    # Count before anything runs: a bad block bails out here.
    my ($x, $need_array) = build_exchanges($name, \%v);
    my $nreq = List::Util::sum(map { scalar @{ $_->{heads} } } @$x);
    my $per_repeat = count_tests(\%v, $nreq, $need_array);
    my $repeats = $Test::Nginx::Util::RepeatEach;

    mark_error_log();
    my ($pid, $why) = start_nginx();

    if (!$pid) {
        fail("$name - nginx started");
        diag("$name - $why");
        diag("error.log of this block (last lines):\n" . block_log_tail());
        $Builder->skip("nginx did not start")
            for 2 .. $per_repeat * $repeats;
        $Extra++ if $per_repeat * $repeats == 0;
        if ($Test::Nginx::Util::UseValgrind) {
            # One that never listened may still be running.
            stop_nginx();
            check_block_valgrind($name);
        }
        return;
    }

    for my $repeat (0 .. $repeats - 1) {
        run_init($name, $v{init}) if defined $v{init};

        my $before = $Builder->current_test;
        my $extra_before = $Extra;
        run_repeat($name, \%v, $repeat);
        my $emitted = $Builder->current_test - $before
                      - ($Extra - $extra_before);

        if ($emitted != $per_repeat) {
            diag("$name - runner miscount: emitted $emitted tests,"
                 . " counted $per_repeat");
        }
    }

    if (!Test::Nginx::Util::is_running($pid)) {
        $Extra++;
        fail("$name - nginx (pid $pid) survived the block");
        diag("error.log of this block (last lines):\n" . block_log_tail());
    }

    if ($is_last && $Test::Nginx::Util::NoClean) {
        $Builder->skip("TEST_NGINX_NO_CLEAN keeps nginx running, so"
                       . " valgrind has not checked it")
            if $Test::Nginx::Util::UseValgrind;
        return;
    }

    stop_nginx();
    check_block_valgrind($name) if $Test::Nginx::Util::UseValgrind;
}

# Valgrind reports already shown in full in this file, by signature
# (the same leak shows up in every block whose config reaches it).
my %ValgrindShown;

# The block's "valgrind clean" test, once its nginx has exited.
sub check_block_valgrind {
    my ($name) = @_;
    my ($ours, $others, $incomplete, $nlogs) = check_valgrind();
    my $title = "$name - valgrind clean";

    if (!$nlogs) {
        fail($title);
        diag("$name - valgrind wrote no log in "
             . "$Test::Nginx::Util::LogDir (see "
             . "$Test::Nginx::Util::StartLog)");
        return;
    }

    ok(!@$ours && !@$incomplete, $title);

    diag("$name - $_->{head}") for @$incomplete;

    for my $set ([$ours, 'from our code'],
                 [$others, 'not from our code, not a failure'])
    {
        my ($reports, $what) = @$set;
        my $again = 0;
        for my $r (@$reports) {
            if ($ValgrindShown{$r->{sig}}++) {
                $again++;
                next;
            }
            diag("$name - valgrind, $what (pid $r->{pid}):\n$r->{text}");
        }
        diag("$name - valgrind: $again more report(s) $what, the same"
             . " as shown above") if $again;
    }
}

sub run_tests {
    my @blocks = blocks();

    for my $pre (@Test::Nginx::Util::BlockPreprocessors) {
        for my $block (@blocks) {
            CORE::eval { $pre->($block); 1 }
                or bail_out("$0 " . $block->name
                            . " - block preprocessor died: $@");
        }
    }

    check_sections($_) for @blocks;

    if ($Test::Nginx::Util::Shuffle) {
        my $seed = $ENV{TEST_NGINX_SHUFFLE_SEED} // int rand 1e6;
        diag("shuffling blocks, TEST_NGINX_SHUFFLE_SEED=$seed");
        srand $seed;
        @blocks = List::Util::shuffle(@blocks);
    }

    if (defined $DeferredPlan) {
        Test::More::plan(tests => $DeferredPlan + @blocks);
        undef $DeferredPlan;
    }

    setup_server_root();

    for my $i (0 .. $#blocks) {
        run_block($blocks[$i], $i == $#blocks);
    }

    Test::More::done_testing() unless $Builder->has_plan;
}

1;

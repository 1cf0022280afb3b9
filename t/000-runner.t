# Self-test of the Test::Nginx::Socket compatible runner in t/lib, using
# only features of a stock nginx.  Every block states something the
# runner must get right for it to pass (request building, response
# parsing, header and error.log checks, config placement).
#
#     TEST_NGINX_BINARY=/usr/sbin/nginx prove -I t/lib t/000-runner.t

use Test::Nginx::Socket;

repeat_each(2);

# Tests per block, in block order (see the comment on count_tests() in
# t/lib/Test/Nginx/Socket.pm for what each section contributes).
plan tests => repeat_each() * (
      4     # 1  sanity
    + 2     # 2  error_code, response_body_like
    + 4     # 3  more_headers
    + 6     # 4  response_headers, absence
    + 4     # 5  response_headers_like
    + 4     # 6  user_files
    + 5     # 7  error_log from a missing file
    + 3     # 8  413 via client_max_body_size
    + 2     # 9  405 on a static file
    + 4     # 10 Content-Length added, body trimmed
    + 2     # 11 explicit Content-Length, exact body
    + 2     # 12 raw_request eval
    + 2     # 13 raw_request packets
    + 6     # 14 request eval, two requests
    + 6     # 15 pipelined_requests
    + 5     # 16 chunked response (SSI)
    + 4     # 17 long chunked response, raw header checks
    + 2     # 18 grep_error_log
    + 1     # 19 abort + ignore_response, info line
    + 1     # 20 log_level section
    + 3     # 21 abort with a partial body
    + 3     # 22 init
    + 3     # 23 http_config / main_config / post_main_config
    + 2     # 24 $TEST_NGINX_* expansion
    + 4     # 25 HEAD request
    + 2     # 26 server_name, chomp
    + 4     # 27 response_body eval string and qr//
    + 4     # 28 error_log / no_error_log eval arrays
    + 2     # 29 response_body_unlike, error_code_like
    + 0     # 30 SKIP
    + 2     # 31 LAST
);

$ENV{TEST_NGINX_RUNNER_WORD} ||= 'expanded';

run_tests();

__DATA__

=== TEST 1: sanity
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- response_body
hello
--- error_code: 200
--- no_error_log
[error]
[alert]



=== TEST 2: status and body of a built-in error page
--- config
    location = /t {
        return 403;
    }
--- request
GET /t
--- timeout: 1s
--- error_code: 403
--- response_body_like: <title>403 Forbidden</title>



=== TEST 3: more_headers reach nginx; comments are skipped
--- config
    location = /t {
        return 200 "foo=$http_x_foo bar=$http_x_bar ua=$http_user_agent\n";
    }
--- request
GET /t
--- more_headers
X-Foo: one
# X-Bar: commented-out
User-Agent: runner-test
--- response_body
foo=one bar= ua=runner-test
--- no_error_log
[error]
[crit]



=== TEST 4: response_headers, including absence
--- config
    location = /t {
        add_header X-Set yes;
        add_header X-Two "a b";
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Set: yes
X-Two: a b
!X-Missing
X-Also-Missing:
--- response_body
ok



=== TEST 5: response_headers_like anchors the pattern
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers_like
Content-Type: text/plain
Server: nginx(/[\d.]+)?
--- response_body
ok



=== TEST 6: user_files are served from the root location
--- user_files
>>> hello.txt
Hello, file.
>>> sub/dir/deep.txt
deep
--- request
GET /sub/dir/deep.txt
--- response_headers
Content-Length: 5
--- response_body
deep
--- no_error_log
[error]



=== TEST 7: error_log sees the 404 of a missing file
--- request
GET /no-such-file.html
--- error_code: 404
--- response_body_like: 404 Not Found
--- error_log
no-such-file.html" failed
No such file or directory
--- no_error_log
[alert]



=== TEST 8: client_max_body_size gives 413
--- config
    location = /small {
        client_max_body_size 8;
        return 200 "accepted\n";
    }
--- request
POST /small
this body is longer than eight bytes
--- error_code: 413
--- response_body_like: 413 Request Entity Too Large
--- error_log
client intended to send too large body



=== TEST 9: POST to a static file gives 405
--- request
POST /index.html
x=1
--- error_code: 405
--- response_body_like: 405 Not Allowed



=== TEST 10: the runner adds Content-Length and trims the body
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "$http_x_body len=$http_x_len\n";
        }
    }
--- config
    location = /echo {
        client_body_in_single_buffer on;
        proxy_set_header X-Body "[$request_body]";
        proxy_set_header X-Len $content_length;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request
POST /echo

   hello world   

--- response_body
[hello world] len=11
--- no_error_log
[error]
[warn]



=== TEST 11: an explicit Content-Length sends the body untouched
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "$http_x_body\n";
        }
    }
--- config
    location = /echo {
        client_body_in_single_buffer on;
        proxy_set_header X-Body "[$request_body]";
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request eval
"POST /echo\n  two  spaces  "
--- more_headers
Content-Length: 15
--- response_body
[  two  spaces  ]



=== TEST 12: raw_request eval is sent verbatim
--- config
    location = /t {
        return 200 "$server_protocol $http_host\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: raw.example\r\n\r\n"
--- response_body
HTTP/1.0 raw.example



=== TEST 13: raw_request as delayed packets
--- config
    location = /t {
        return 200 "$request_method $uri\n";
    }
--- raw_request eval
["GET /t HT",
 { value => "TP/1.0\r\nHost: x\r\n", delay_before => 0.05 },
 { value => "\r\n", delay_before => 0.05 }]
--- response_body
GET /t



=== TEST 14: request eval with two requests
--- config
    location = /a {
        return 200 "first\n";
    }
    location = /b {
        return 404 "second\n";
    }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body eval
["first\n", "second\n"]
--- no_error_log
[error]



=== TEST 15: pipelined_requests on one connection
--- config
    location = /a {
        return 200 "pipe a $connection_requests\n";
    }
    location = /b {
        return 200 "pipe b $connection_requests\n";
    }
--- pipelined_requests eval
["GET /a", "GET /b"]
--- response_body eval
["pipe a 1\n", "pipe b 2\n"]
--- response_headers eval
["Connection: keep-alive", "Connection: close"]



=== TEST 16: chunked response from SSI is decoded
--- config
    location /ssi/ {
        ssi on;
        ssi_types text/plain;
        root html;
    }
--- user_files
>>> ssi/page.html
left<!--# echo var="arg_x" -->right
--- request
GET /ssi/page.html?x=42
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
left42right
--- no_error_log
[error]



=== TEST 17: long chunked response (several chunks)
--- config
    location /ssi/ {
        ssi on;
        ssi_types text/plain;
        root html;
    }
--- user_files eval
[["ssi/long.html", ("0123456789" x 10000) . "<!--# echo var=\"arg_x\" -->"]]
--- request
GET /ssi/long.html?x=END
--- raw_response_headers_like: Transfer-Encoding: chunked\r\n
--- raw_response_headers_unlike: Content-Length
--- response_body eval
("0123456789" x 10000) . "END"



=== TEST 18: grep_error_log collects the matching parts
--- request
GET /missing-42.html
--- error_code: 404
--- grep_error_log eval: qr/missing-\d+\.html" failed/
--- grep_error_log_out
missing-42.html" failed



=== TEST 19: abort: a timeout is expected, info lines are logged
--- log_level: info
--- config
    location = /t {
        return 200 "never\n";
    }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\n"
--- timeout: 200ms
--- abort
--- ignore_response
--- wait: 0.1
--- error_log
client prematurely closed connection



=== TEST 20: the log_level section lowers the error_log level
--- log_level: notice
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\n"
--- timeout: 200ms
--- abort
--- ignore_response
--- wait: 0.1
--- no_error_log
client prematurely closed connection



=== TEST 21: abort keeps a partial response
--- config
    location /slow/ {
        root html;
        limit_rate 1000;
        send_timeout 1s;
    }
--- user_files eval
[["slow/big.txt", "x" x 100000]]
--- request
GET /slow/big.txt
--- timeout: 0.3
--- abort
--- response_headers
Content-Length: 100000
--- response_body_like: ^x{100,}$



=== TEST 22: init runs Perl before the request
--- init
my $file = html_dir() . "/made-by-init.txt";
open my $fh, '>', $file or die "$file: $!";
print {$fh} "from init\n";
close $fh;
--- request
GET /made-by-init.txt
--- response_body
from init
--- no_error_log
[error]



=== TEST 23: http_config, main_config and post_main_config placement
--- main_config
worker_rlimit_nofile 512;
--- post_main_config
pcre_jit off;
--- http_config
    map $uri $runner_mapped {
        default "mapped";
    }
--- config
    location = /t {
        return 200 "$runner_mapped\n";
    }
--- request
GET /t
--- response_body
mapped
--- no_error_log
[emerg]



=== TEST 24: $TEST_NGINX_* variables in config and expectations
--- config
    location = /$TEST_NGINX_RUNNER_WORD {
        return 200 "word=$TEST_NGINX_RUNNER_WORD port=$server_port\n";
    }
--- request
GET /$TEST_NGINX_RUNNER_WORD
--- response_body
word=$TEST_NGINX_RUNNER_WORD port=$TEST_NGINX_SERVER_PORT



=== TEST 25: HEAD has headers but no body
--- config
    location = /t {
        return 200 "twelve bytes";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 12
--- response_body
--- no_error_log
[error]



=== TEST 26: server_name sets the Host header; chomp filter
--- server_name: runner.example
--- config
    location = /t {
        return 200 "$host|$server_name";
    }
--- request
GET /t
--- response_body chomp
runner.example|runner.example



=== TEST 27: response_body eval with a string and a qr//
--- config
    location = /t {
        return 200 "no newline at the end";
    }
    location = /u {
        return 200 "id=12345\n";
    }
--- request eval
["GET /t", "GET /u"]
--- response_body eval
["no newline at the end", qr/^id=\d{5}\n\z/]
--- error_code eval
[200, 200]



=== TEST 28: error_log / no_error_log with eval arrays
--- request
GET /gone/file.txt
--- error_code: 404
--- error_log eval
[qr/open\(\) "[^"]+gone\/file\.txt" failed/, "[error]"]
--- no_error_log eval
["[crit]"]



=== TEST 29: response_body_unlike and error_code_like
--- config
    location = /t {
        return 418 "short and stout\n";
    }
--- request
GET /t
--- error_code_like: ^4\d\d$
--- response_body_unlike: error



=== TEST 30: SKIP drops a block (this one would fail)
--- SKIP
--- request
GET /t
--- response_body
this block would fail



=== TEST 31: LAST stops the list here
--- config
    location = /t {
        return 200 "last\n";
    }
--- request
GET /t
--- response_body
last
--- LAST



=== TEST 32: never runs, it comes after LAST (and would fail)
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- response_body
this block would fail

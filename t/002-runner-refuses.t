# The runner refuses what it does not implement, loudly: a block with an
# unknown section, or an unset $TEST_NGINX_ variable, stops the run
# instead of passing silently.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);

my $dir = tempdir('runner-XXXX', TMPDIR => 1, CLEANUP => 1);

sub run_suite {
    my ($name, $blocks) = @_;
    open my $fh, '>', "$dir/$name.t" or die $!;
    print $fh "use Test::Nginx::Socket 'no_plan';\nrun_tests();\n\n"
        . "__DATA__\n\n$blocks";
    close $fh;
    my $out = `prove -I t/lib $dir/$name.t 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = run_suite('unknown', <<'BLOCK');
=== TEST 1: a section upstream has but this runner does not
--- config
location = /t { return 200; }
--- request
GET /t
--- stap
probe begin { exit() }
BLOCK
isnt $rc, 0, 'an unknown section fails the run';
like $out, qr/Bailout called.*unknown section.*stap|stap.*not supported/is,
    'and names the section';

($rc, $out) = run_suite('unset', <<'BLOCK');
=== TEST 1: a variable nobody set
--- config
location = /t { return 200 "$TEST_NGINX_NOBODY_SET_THIS"; }
--- request
GET /t
BLOCK
isnt $rc, 0, 'an unset $TEST_NGINX_ variable fails the run';
like $out, qr/TEST_NGINX_NOBODY_SET_THIS/, 'and names it';

done_testing();

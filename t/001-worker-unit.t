# The worker's C unit tests (cmocka), one TAP test per cmocka test.  The
# binary runs several cmocka groups, so its own TAP output (a plan per
# group) is not one valid stream: read its standard report instead.

use strict;
use warnings;
use Test::More;

my $top = $ENV{SHOPIFY_BC_TOP} || '.';
my $bin = "$top/worker/build/test_worker";

-x $bin or BAIL_OUT("$bin is not built: run make first");

$ENV{SBW_FIXTURES_DIR} ||= "$top/fixtures";
delete $ENV{CMOCKA_MESSAGE_OUTPUT};

open my $fh, '-|', "$bin 2>&1" or die "cannot run $bin: $!";

my ($count, %failed) = (0);
while (my $line = <$fh>) {
    chomp $line;
    if ($line =~ /^\[==========\] Running \d+ test\(s\)/) {
        next;
    } elsif ($line =~ /^\[       OK \] (\S+)/) {
        pass($1);
        $count++;
    } elsif ($line =~ /^\[  (?:FAILED|ERROR)  \] (\S+)$/) {
        next if $failed{$1}++;      # the closing summary names it again
        fail($1);
        $count++;
    } elsif ($line =~ /^\[  SKIPPED \] (\S+)/) {
        SKIP: { skip($1, 1) }
        $count++;
    } elsif ($line !~ /^\[/ && $line =~ /\S/) {
        diag($line);
    }
}
close $fh;

ok($? == 0, 'test_worker exited 0');
cmp_ok($count, '>=', 40, "cmocka ran its tests ($count)");

done_testing();

# The worker's own end-to-end checks (worker/test/e2e.sh: a private Redis
# and sandbox, entries written the way nginx writes them, PostgreSQL
# restarted under the worker), reported to prove as TAP.  Runs inside the
# suite's throwaway cluster (scripts/pg-throwaway.sh).

use strict;
use warnings;
use Test::More;

my $top = $ENV{SHOPIFY_BC_TOP} || '.';

$ENV{PGPORT} or plan skip_all => 'needs the PG* settings of scripts/pg-throwaway.sh';

$ENV{SBW_E2E_INNER} = 1;
open my $fh, '-|', "$top/worker/test/e2e.sh 2>&1"
    or die "cannot run worker/test/e2e.sh: $!";

my $checks = 0;
while (my $line = <$fh>) {
    chomp $line;
    if ($line =~ /^(not )?ok - (.*)$/) {
        ok(!$1, $2);
        $checks++;
    } elsif ($line =~ /\S/ && $line !~ /^\d+ passed, \d+ failed$/) {
        diag($line);
    }
}
close $fh;

ok($? == 0, 'worker/test/e2e.sh exited 0');
cmp_ok($checks, '>=', 30, "it ran its checks ($checks)");

done_testing();

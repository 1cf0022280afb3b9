#!/usr/bin/env bash
# The worker throughput benchmark (make bench-worker): shopify-bc-worker
# against the BC sandbox with BC's latency and limits, in a throwaway
# PostgreSQL cluster, a private Redis and a private sandbox on free
# loopback ports.  See bench/README.md, "Worker throughput".
#
# Quick run:  BENCH_WORKER_WINDOWS=2 BENCH_WORKER_CONC_SECONDS=10 bench/worker.sh
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

for tool in redis-server psql python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-worker: $tool is missing (make deps installs it)" >&2
        exit 2
    fi
done

worker=${BENCH_WORKER_BIN:-worker/build/shopify-bc-worker}
if [ ! -x "$worker" ]; then
    echo "bench-worker: $worker is missing (make worker builds it)" >&2
    exit 2
fi

# the ledger commits as a production server does, unless told otherwise
if [ "${BENCH_WORKER_PG_FSYNC:-1}" = 0 ]; then
    export PG_THROWAWAY_FSYNC=off
else
    export PG_THROWAWAY_FSYNC=on
fi

exec scripts/pg-throwaway.sh -- python3 bench/worker.py "$@"

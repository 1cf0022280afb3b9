#!/usr/bin/env bash
# The intake benchmark (make bench): ngx_http_shopify_module against the
# same nginx's "return 200;", on loopback.  See bench/README.md.
#
# Quick run:  BENCH_SECONDS=3 BENCH_ROUNDS=1 BENCH_RSS_DELIVERIES=20000 \
#             bench/intake.sh
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

for tool in wrk redis-server python3 cc; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench: $tool is missing (make deps installs it)" >&2
        exit 2
    fi
done

module=${BENCH_MODULE:-$top/build/nginx/ngx_http_shopify_module.so}
if [ ! -f "$module" ]; then
    echo "bench: $module is missing (make module builds it)" >&2
    exit 2
fi

# the open-loop client
mkdir -p build/bench
if [ ! -x build/bench/openloop ] \
        || [ bench/openloop.c -nt build/bench/openloop ]; then
    cc -O2 -Wall -Wextra -Werror -o build/bench/openloop bench/openloop.c
fi

exec python3 bench/intake.py "$@"

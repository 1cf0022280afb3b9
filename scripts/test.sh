#!/usr/bin/env bash
# Runs every suite: the worker's unit tests, the module's Test::Nginx
# suites and the end-to-end suites.  Starts what they need on private
# loopback ports and stops it again: a Redis with the production
# persistence settings and a throwaway PostgreSQL cluster (scripts/pg-throwaway.sh).
# Closes with prove's summary.  Extra arguments go to prove (a file list).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_LOAD_MODULES="$top/build/nginx/ngx_http_shopify_module.so"
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
# free ports unless given: never someone else's Redis or nginx, so two
# runs (two checkouts) can go at once
export TEST_NGINX_REDIS_PORT=${TEST_NGINX_REDIS_PORT:-$(free_port)}
export TEST_NGINX_SERVER_PORT=${TEST_NGINX_SERVER_PORT:-$(free_port)}
export SHOPIFY_BC_TOP="$top"

tmp=$(mktemp -d /tmp/shopify-bc-test.XXXXXX)
chmod 755 "$tmp"
export SHOPIFY_BC_TEST_TMP="$tmp"

cleanup() {
    if [ -f "$tmp/redis.pid" ]; then
        pid=$(cat "$tmp/redis.pid")
        kill "$pid" 2>/dev/null || true
        # it may still be writing its files: wait before removing them
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/redis"
redis-server --bind 127.0.0.1 --port "$TEST_NGINX_REDIS_PORT" \
    --dir "$tmp/redis" --appendonly yes --appendfsync always --save '' \
    --maxmemory-policy noeviction --daemonize yes \
    --pidfile "$tmp/redis.pid" --logfile "$tmp/redis/redis.log"

for _ in $(seq 50); do
    redis-cli -p "$TEST_NGINX_REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done

if [ "$(cat "$tmp/redis.pid" 2>/dev/null)" = "" ]; then
    echo "test: redis-server did not start on port $TEST_NGINX_REDIS_PORT" >&2
    exit 1
fi

if [ $# -eq 0 ]; then
    set -- -r t
fi

# a fresh PostgreSQL cluster of this run's own, PG* variables set
scripts/pg-throwaway.sh -- prove -I t/lib "$@"

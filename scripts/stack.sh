#!/usr/bin/env bash
# The local stack, in the background on loopback: Redis, PostgreSQL, the
# BC365/Entra sandbox, nginx with the intake module, and the worker.
#
#   scripts/stack.sh up       start what is not running; print the settings
#   scripts/stack.sh down     stop everything (data is kept)
#   scripts/stack.sh status   show what runs
#   scripts/stack.sh destroy  stop and delete all state
#
# Runtime state lives in $STACK_DIR (default /var/tmp/shopify-bc-stack),
# outside the checkout so the postgres user and nginx's workers can reach
# it.  The settings are written to $STACK_DIR/stack.env in shell form.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

STACK_DIR=${STACK_DIR:-/var/tmp/shopify-bc-stack}
NGINX_PORT=${NGINX_PORT:-8480}
REDIS_PORT=${REDIS_PORT:-6480}
PG_PORT=${PG_PORT:-5480}
SANDBOX_PORT=${SANDBOX_PORT:-8481}
METRICS_PORT=${METRICS_PORT:-9101}
PG_CLUSTER=${PG_CLUSTER:-shopifybc}
PG_VERSION=15
# Raised when a stack made by an earlier version of this project cannot be
# reused as it is (settings or data it lacks).  STACK_STALE=recreate (the
# demo sets it) destroys such a stack and starts afresh; otherwise up
# refuses and says how to start afresh.
STACK_FORMAT=2
STACK_STALE=${STACK_STALE:-refuse}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

say() { printf 'stack: %s\n' "$*" >&2; }

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        sudo -u postgres "$@"
    fi
}

alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {
    local what=$1; shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    say "$what did not come up; see the logs in $STACK_DIR"
    return 1
}

random_hex() {
    head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# settings that must survive restarts are made once
secrets() {
    if [ ! -f "$STACK_DIR/secrets.env" ]; then
        umask 077
        cat > "$STACK_DIR/secrets.env" <<EOF
SHOPIFY_WEBHOOK_SECRET=$(random_hex 24)
PG_PASSWORD=$(random_hex 16)
BC365_CLIENT_SECRET=$(random_hex 16)
EOF
        umask 022
    fi
    # shellcheck disable=SC1091
    . "$STACK_DIR/secrets.env"
}

start_redis() {
    mkdir -p "$STACK_DIR/redis"
    if alive "$STACK_DIR/redis/redis.pid"; then
        return
    fi
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
        --dir "$STACK_DIR/redis" --appendonly yes --appendfsync always \
        --save '' --maxmemory-policy noeviction --daemonize yes \
        --pidfile "$STACK_DIR/redis/redis.pid" \
        --logfile "$STACK_DIR/redis/redis.log"
    wait_for redis redis-cli -p "$REDIS_PORT" ping
}

start_postgres() {
    if ! pg_lsclusters -h | awk '{print $1"/"$2}' \
            | grep -qx "$PG_VERSION/$PG_CLUSTER"; then
        say "creating PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
        $SUDO install -d -o postgres -g postgres "$STACK_DIR/pg"
        $SUDO pg_createcluster "$PG_VERSION" "$PG_CLUSTER" \
            -p "$PG_PORT" -d "$STACK_DIR/pg/data" \
            -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    fi
    if ! pg_lsclusters -h | awk '$2 == "'$PG_CLUSTER'" {print $4}' \
            | grep -q online; then
        $SUDO pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    fi
    wait_for postgres pg_isready -q -h 127.0.0.1 -p "$PG_PORT"

    # role and database, made once, as the cluster's superuser
    as_postgres psql -q -p "$PG_PORT" -v ON_ERROR_STOP=1 <<EOF
SELECT 'CREATE ROLE shopify_bc LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shopify_bc')
\gexec
ALTER ROLE shopify_bc PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE shopify_bc OWNER shopify_bc'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shopify_bc')
\gexec
EOF
}

start_sandbox() {
    mkdir -p "$STACK_DIR/sandbox"
    if alive "$STACK_DIR/sandbox/sandbox.pid"; then
        return
    fi
    nohup python3 "$top/sandbox/sandbox.py" serve --host 127.0.0.1 \
        --port "$SANDBOX_PORT" --tenant "$BC365_TENANT_ID" \
        --client-id "$BC365_CLIENT_ID" \
        --client-secret "$BC365_CLIENT_SECRET" \
        --state-file "$STACK_DIR/sandbox/state.json" \
        > "$STACK_DIR/sandbox/sandbox.log" 2>&1 &
    echo $! > "$STACK_DIR/sandbox/sandbox.pid"
    wait_for sandbox curl -sf "http://127.0.0.1:$SANDBOX_PORT/_sandbox/health"
}

start_nginx() {
    local user_line=""
    mkdir -p "$STACK_DIR/nginx/conf" "$STACK_DIR/nginx/logs" \
             "$STACK_DIR/nginx/tmp"
    if [ "$(id -u)" -eq 0 ]; then
        user_line="user www-data;"
        chown www-data "$STACK_DIR/nginx/tmp"
    fi
    ( umask 077; : > "$STACK_DIR/nginx/conf/nginx.conf" )
    cat > "$STACK_DIR/nginx/conf/nginx.conf" <<EOF
load_module $top/build/nginx/ngx_http_shopify_module.so;
$user_line
worker_processes 2;
pid $STACK_DIR/nginx/logs/nginx.pid;
error_log $STACK_DIR/nginx/logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log $STACK_DIR/nginx/logs/access.log;
    client_body_temp_path $STACK_DIR/nginx/tmp/body;
    proxy_temp_path $STACK_DIR/nginx/tmp/proxy;
    fastcgi_temp_path $STACK_DIR/nginx/tmp/fastcgi;
    uwsgi_temp_path $STACK_DIR/nginx/tmp/uwsgi;
    scgi_temp_path $STACK_DIR/nginx/tmp/scgi;
    shopify_redis 127.0.0.1:$REDIS_PORT;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_body_buffer_size 512k;
        client_max_body_size 4m;
        location = /webhooks/shopify {
            shopify_webhook;
            shopify_webhook_secret $SHOPIFY_WEBHOOK_SECRET;
        }
        location = /health {
            shopify_health;
        }
    }
}
EOF
    if alive "$STACK_DIR/nginx/logs/nginx.pid"; then
        nginx -p "$STACK_DIR/nginx" -c conf/nginx.conf -e stderr -s reload
    else
        nginx -p "$STACK_DIR/nginx" -c conf/nginx.conf -e stderr
    fi
    wait_for nginx curl -sf "http://127.0.0.1:$NGINX_PORT/health"
}

start_worker() {
    mkdir -p "$STACK_DIR/worker"
    if alive "$STACK_DIR/worker/worker.pid"; then
        return
    fi
    (
        set -a
        # shellcheck disable=SC1091
        . "$STACK_DIR/stack.env"
        set +a
        SKU_MAP_JSON='{}'
        export SKU_MAP_JSON
        VARIANT_MAP_FILE="$top/fixtures/meta/variant-map.json"
        export VARIANT_MAP_FILE
        exec nohup "$top/worker/build/shopify-bc-worker" \
            > "$STACK_DIR/worker/worker.log" 2>&1
    ) &
    echo $! > "$STACK_DIR/worker/worker.pid"
    wait_for worker curl -sf "http://127.0.0.1:$METRICS_PORT/health"
}

write_env() {
    # it holds the stack's secrets: readable by its owner only
    ( umask 077; : > "$STACK_DIR/stack.env" )
    cat > "$STACK_DIR/stack.env" <<EOF
# The local stack's settings (scripts/stack.sh up).  Source this file.
STACK_DIR='$STACK_DIR'
WEBHOOK_URL='http://127.0.0.1:$NGINX_PORT/webhooks/shopify'
HEALTH_URL='http://127.0.0.1:$NGINX_PORT/health'
SHOPIFY_WEBHOOK_SECRET='$SHOPIFY_WEBHOOK_SECRET'
REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'
STREAM_KEY='shopify:webhooks'
DATABASE_URL='postgresql://shopify_bc:$PG_PASSWORD@127.0.0.1:$PG_PORT/shopify_bc'
SANDBOX_URL='http://127.0.0.1:$SANDBOX_PORT'
BC365_API_BASE='http://127.0.0.1:$SANDBOX_PORT'
BC365_AUTH_BASE='http://127.0.0.1:$SANDBOX_PORT'
BC365_TENANT_ID='$BC365_TENANT_ID'
BC365_ENVIRONMENT='$BC365_ENVIRONMENT'
BC365_CLIENT_ID='$BC365_CLIENT_ID'
BC365_CLIENT_SECRET='$BC365_CLIENT_SECRET'
BC365_COMPANY_ID='$BC365_COMPANY_ID'
BC365_BASE_URL='http://127.0.0.1:$SANDBOX_PORT/v2.0/$BC365_TENANT_ID/$BC365_ENVIRONMENT/api/v2.0/companies($BC365_COMPANY_ID)'
BC365_DEFAULT_CUSTOMER='WEB'
BC365_SHIPPING_ACCOUNT='$BC365_SHIPPING_ACCOUNT'
BC365_TIP_ACCOUNT='22300'
BC365_GIFT_CARD_ACCOUNT='22150'
BC365_CUSTOM_LINE_ACCOUNT='40250'
BC365_ROUNDING_ACCOUNT='40900'
BC365_COMPANIES='{"acme-demo-eu.myshopify.com":"a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6","acme-europe-webshop.myshopify.com":"a3e0c5d2-6f41-4b8e-9d27-c15e8b04f9a6"}'
METRICS_ADDR='127.0.0.1:$METRICS_PORT'
WORKER_METRICS_URL='http://127.0.0.1:$METRICS_PORT/metrics'
EOF
}

stop_pidfile() {
    local pidfile=$1 name=$2
    if alive "$pidfile"; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        for _ in $(seq 50); do
            alive "$pidfile" || break
            sleep 0.1
        done
        say "stopped $name"
    fi
    rm -f "$pidfile"
}

check_format() {
    local found=none

    [ -d "$STACK_DIR" ] && [ -n "$(ls -A "$STACK_DIR" 2>/dev/null)" ] \
        || return 0
    [ -f "$STACK_DIR/format" ] && found=$(cat "$STACK_DIR/format")
    [ "$found" = "$STACK_FORMAT" ] && return 0

    if [ "$STACK_STALE" = recreate ]; then
        say "$STACK_DIR was made by an earlier version (format $found," \
            "this is $STACK_FORMAT): destroying it and starting afresh"
        destroy
        return 0
    fi

    say "$STACK_DIR was made by an earlier version (format $found, this" \
        "is $STACK_FORMAT) and cannot be reused as it is;" \
        "'scripts/stack.sh destroy' deletes it (the stack's data only)," \
        "then run this again"
    exit 1
}

up() {
    check_format
    mkdir -p "$STACK_DIR"
    chmod 755 "$STACK_DIR"
    echo "$STACK_FORMAT" > "$STACK_DIR/format"
    secrets

    BC365_TENANT_ID=sandbox-tenant
    BC365_ENVIRONMENT=production
    BC365_CLIENT_ID=shopify-bc-demo
    # the sandbox's CRONUS USA company and its freight income account
    BC365_COMPANY_ID=${BC365_COMPANY_ID:-31b7c38b-2d4e-5437-beff-68c052310a74}
    BC365_SHIPPING_ACCOUNT=${BC365_SHIPPING_ACCOUNT:-40400}

    write_env
    start_redis
    start_postgres
    start_sandbox
    start_nginx
    start_worker

    say "up; settings in $STACK_DIR/stack.env"
    # secrets and passwords stay in the file (mode 0600), not on the terminal
    grep -v '^#' "$STACK_DIR/stack.env" \
        | sed -E "s/^([A-Z0-9_]*(SECRET|PASSWORD|TOKEN_KEY))=.*/\1=<in stack.env>/;
                  s#(postgresql://[^:]*:)[^@]*@#\1<in stack.env>@#"
}

down() {
    stop_pidfile "$STACK_DIR/worker/worker.pid" worker
    if alive "$STACK_DIR/nginx/logs/nginx.pid"; then
        nginx -p "$STACK_DIR/nginx" -c conf/nginx.conf -e stderr -s quit
        say "stopped nginx"
    fi
    stop_pidfile "$STACK_DIR/sandbox/sandbox.pid" sandbox
    if pg_lsclusters -h 2>/dev/null | awk '{print $2, $4}' \
            | grep -qx "$PG_CLUSTER online"; then
        $SUDO pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop
        say "stopped postgres"
    fi
    if alive "$STACK_DIR/redis/redis.pid"; then
        redis-cli -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
        say "stopped redis"
    fi
}

status() {
    local name pidfile
    for name in redis/redis sandbox/sandbox nginx/logs/nginx worker/worker; do
        pidfile="$STACK_DIR/$name.pid"
        if alive "$pidfile"; then
            echo "${name%%/*}: running (pid $(cat "$pidfile"))"
        else
            echo "${name%%/*}: stopped"
        fi
    done
    pg_lsclusters -h 2>/dev/null | awk '$2 == "'$PG_CLUSTER'" \
        {print "postgres: " $4}'
}

destroy() {
    down
    if pg_lsclusters -h 2>/dev/null | awk '{print $2}' \
            | grep -qx "$PG_CLUSTER"; then
        $SUDO pg_dropcluster "$PG_VERSION" "$PG_CLUSTER"
    fi
    $SUDO rm -rf "$STACK_DIR"
    say "destroyed $STACK_DIR"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    destroy) destroy ;;
    *) echo "usage: $0 up|down|status|destroy" >&2; exit 2 ;;
esac

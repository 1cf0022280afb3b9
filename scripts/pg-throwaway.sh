#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster of its own: a
# fresh data directory in a temporary directory, listening on a free
# loopback port, gone when the command ends.  The command sees PGHOST,
# PGPORT, PGUSER, PGPASSWORD and PGDATABASE.
#
# pg_virtualenv names its cluster "regress" when run as root, so two
# runs at once collide; this one has no name to share.
#
# The cluster runs with fsync=off (tests want speed, not durability);
# PG_THROWAWAY_FSYNC=on gives it a production server's fsync.
#
#   scripts/pg-throwaway.sh -- prove -r t
set -euo pipefail

[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- command [args...]" >&2; exit 2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "pg-throwaway: no PostgreSQL server binaries under" \
         "/usr/lib/postgresql (apt-get install postgresql)" >&2
    exit 1
fi

fsync=${PG_THROWAWAY_FSYNC:-off}
case $fsync in
    on|off) ;;
    *) echo "pg-throwaway: PG_THROWAWAY_FSYNC is on or off" >&2; exit 2 ;;
esac

dir=$(mktemp -d /tmp/pg-throwaway.XXXXXX)
chmod 755 "$dir"
port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# the server refuses to run as root: run it as postgres then
as_owner=()
owner=$(id -un)
if [ "$(id -u)" = 0 ]; then
    owner=postgres
    as_owner=(runuser -u postgres --)
fi
chown "$owner" "$dir"

printf '%s\n' "$password" > "$dir/pwfile"
chown "$owner" "$dir/pwfile"

stop() {
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate \
        stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bindir/initdb" -D "$dir/data" -U "$owner" \
    --pwfile="$dir/pwfile" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }

"${as_owner[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=$fsync" \
    start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }

{
    echo '#!/bin/sh'
    echo "exec ${as_owner[*]} $bindir/pg_ctl -D $dir/data -l $dir/server.log" \
         "-w -m fast restart >/dev/null"
} > "$dir/restart"
chmod 755 "$dir/restart"
# the same as a crash: no shutdown checkpoint, recovery at start
{
    echo '#!/bin/sh'
    echo "exec ${as_owner[*]} $bindir/pg_ctl -D $dir/data -l $dir/server.log" \
         "-w -m immediate restart >/dev/null"
} > "$dir/crash-restart"
chmod 755 "$dir/crash-restart"

export PG_THROWAWAY_DIR=$dir
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=$owner PGPASSWORD=$password
export PGDATABASE=postgres
unset PGHOSTADDR PGSERVICE

set +e
"$@"
rc=$?
set -e
exit $rc

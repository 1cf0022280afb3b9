#!/usr/bin/env bash
# Builds ngx_http_shopify_module.so against Debian's nginx-dev tree, with
# the exact configure flags of /usr/sbin/nginx so the module is binary
# compatible with it.  Usage: build-module.sh <build dir>
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
builddir=$(mkdir -p "${1:-$top/build/nginx}" && cd "${1:-$top/build/nginx}" && pwd)
src=/usr/share/nginx/src

if [ ! -f "$src/conf_flags" ]; then
    echo "build-module: $src/conf_flags not found: install nginx-dev" >&2
    exit 1
fi

# shellcheck disable=SC1091
. "$src/conf_flags"

# configure writes only into --builddir; re-run it when the config script
# or the flags changed, not on every build
stamp="$builddir/.configured"
if [ ! -f "$builddir/Makefile" ] || [ "$top/config" -nt "$stamp" ] \
        || [ "$src/conf_flags" -nt "$stamp" ]; then
    (cd "$src" && ./configure "${NGX_CONF_FLAGS[@]}" \
        --with-cc-opt="-g -O2 -fPIC -Wextra -Wno-unused-parameter" \
        --with-ld-opt="-fPIC" \
        --add-dynamic-module="$top" --builddir="$builddir") \
        > "$builddir/configure.log" 2>&1 \
        || { tail -30 "$builddir/configure.log" >&2; exit 1; }
    touch "$stamp"
fi

make -s -C "$src" -f "$builddir/Makefile" modules
ls -l "$builddir/ngx_http_shopify_module.so" >/dev/null

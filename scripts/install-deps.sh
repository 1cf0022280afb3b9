#!/usr/bin/env bash
# Installs the Debian packages the build, the stack and the tests need.
# Idempotent: packages already present are not touched and apt is only run
# when something is missing.  Runs apt-get as root, through sudo otherwise.
set -euo pipefail

PACKAGES=(
    # build
    gcc make pkg-config
    nginx nginx-dev
    libhiredis-dev libjansson-dev libcurl4-openssl-dev libssl-dev
    libpq-dev libmicrohttpd-dev libcmocka-dev
    # services
    redis-server postgresql postgresql-contrib
    # tests and sandbox
    python3 python3-cryptography perl libtest-base-perl libwww-perl libtext-diff-perl
    libipc-run-perl liblist-moreutils-perl libtest-longstring-perl
    libio-socket-ssl-perl
    curl procps openssl valgrind
    # benchmark
    wrk
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Debian starts the freshly installed daemons where an init system runs;
# the project runs its own instances on private ports, so stop the default
# ones to keep the machine quiet (no-ops where nothing was started).
if command -v service >/dev/null 2>&1; then
    $SUDO service nginx stop >/dev/null 2>&1 || true
    $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

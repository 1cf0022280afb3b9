#!/usr/bin/env bash
# The main job: bring the stack up, deliver the realistic Shopify orders in
# fixtures/ to nginx, and show the BC sales orders they became.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

# the demo's stack holds only demo data: one left by an earlier version
# is recreated rather than reused
STACK_STALE=recreate "$top/scripts/stack.sh" up
echo
exec python3 "$top/scripts/demo.py"

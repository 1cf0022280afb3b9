#!/usr/bin/env bash
# House rules a machine can check: nginx layout in the module (80
# columns, no tabs, no // comments, no trailing blanks).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
files=$(ls ngx_shopify_module/*.[ch])

if grep -nE '.{81,}' $files; then
    echo "lint: lines over 80 columns" >&2; status=1
fi
if grep -nP '\t' $files; then
    echo "lint: tabs" >&2; status=1
fi
if grep -nE '(^|[^:"])//' $files; then
    echo "lint: // comments" >&2; status=1
fi
if grep -nE '[[:space:]]+$' $files; then
    echo "lint: trailing blanks" >&2; status=1
fi
exit $status

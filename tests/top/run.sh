#!/bin/sh
# slowdog-top on logs from real runs: starts servers with libslowdog.so
# preloaded (text, JSON lines, SLOWDOG_REPEAT), then checks the summary,
# --folded, --json, the filters, damaged input, standard input, and every
# CPython found. Takes about 10 seconds.
#
#   tests/top/run.sh [BUILD_DIR]        (default: build)
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/test_top.py" "${1:-build}"

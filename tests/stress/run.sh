#!/bin/bash
# Stress captures on every interpreter: tests/stress/run.sh BUILD_DIR [SECONDS]
# A few seconds each in the test suite; give more for a long local run.
set -u
build=$(cd "${1:-build}" && pwd)
secs=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
pythons=()
root=$(pyenv root 2>/dev/null || echo /root/.pyenv)
for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
	p=$(ls -d "$root"/versions/$v.*/bin/python$v 2>/dev/null | tail -1)
	[ -n "$p" ] && pythons+=("$p")
done
[ -x /usr/bin/python3 ] && pythons+=(/usr/bin/python3)
# Debian unstable's, as scripts/newer-python unpacks them.
newer=${SLOWDOG_NEWER_PYTHON:-/opt/slowdog-python}
for v in 3.14 3.15; do
	[ -x "$newer/$v/bin/python$v" ] && pythons+=("$newer/$v/bin/python$v")
done
fail=0
for py in "${pythons[@]}"; do
	log=$(mktemp /tmp/slowdog-stress.XXXXXX)
	out=$(LD_PRELOAD="$build/libslowdog.so" SLOWDOG_THRESHOLD=1ms \
		SLOWDOG_LOG="$log" timeout $((secs * 4 + 60)) "$py" "$here/pystress.py" "$log" "$secs" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		echo "ok   stress $py: $out"
	else
		echo "FAIL stress $py (exit $rc): $out"
		fail=1
	fi
	rm -f "$log"
done
exit $fail

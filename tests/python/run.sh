#!/bin/sh
# Builds the Python walker's test shared object with cc and runs
# test_pywalk.py under every CPython found: pyenv's 3.8-3.13, Debian's
# /usr/bin/python3, and Debian unstable's 3.14 and 3.15 where
# scripts/newer-python put them ($SLOWDOG_NEWER_PYTHON); pyenv's 3.6/3.7 must be refused; libpython loaded with
# RTLD_LOCAL (as uWSGI may) must still be found. Exit status 1 on any failure.
#
#   tests/python/run.sh [python ...]     (default: all found)
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${SD_PYWALK_OUT:-$(mktemp -d /tmp/sd-pywalk.XXXXXX)}
cc=${CC:-cc}
cflags="-std=gnu11 -D_GNU_SOURCE -fno-strict-aliasing -O2 -g -Wall -Wextra
	-Werror -Wshadow -Wno-missing-field-initializers -I$top/src -I$top/include"
core="$top/src/python.c $top/src/pyoffsets.c $top/src/mem.c $top/src/real.c"

# shellcheck disable=SC2086
$cc $cflags -shared -fPIC -fvisibility=hidden -o "$out/pywalk_test.so" \
	$core "$here/pywalk_test.c" -ldl -lpthread || exit 1
# shellcheck disable=SC2086
$cc $cflags -o "$out/embed_local" $core "$here/embed_local.c" -ldl -lpthread \
	|| exit 1

root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
fail=0
pass=0

run() { # label, command...
	label=$1
	shift
	log="$out/log.$(echo "$label" | tr -c 'A-Za-z0-9.\n' '_')"
	if "$@" >"$log" 2>&1; then
		printf 'PASS  %s  (%s)\n' "$label" \
			"$(grep -E '^(Ran|stress|CPython)' "$log" | tr '\n' ' ')"
		pass=$((pass + 1))
	else
		printf 'FAIL  %s\n' "$label"
		sed 's/^/      /' "$log" | tail -40
		fail=$((fail + 1))
	fi
}

if [ $# -gt 0 ]; then
	pythons="$*"
else
	pythons=""
	for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
		for d in "$root"/versions/$v.*; do
			[ -x "$d/bin/python$v" ] && pythons="$pythons $d/bin/python$v"
		done
	done
	[ -x /usr/bin/python3 ] && pythons="$pythons /usr/bin/python3"
	newer=${SLOWDOG_NEWER_PYTHON:-/opt/slowdog-python}
	for v in 3.14 3.15; do
		[ -x "$newer/$v/bin/python$v" ] && pythons="$pythons $newer/$v/bin/python$v"
	done
fi

for py in $pythons; do
	run "$py" env SD_PYWALK_SO="$out/pywalk_test.so" PYTHONDONTWRITEBYTECODE=1 \
		"$py" "$here/test_pywalk.py"
done

if [ $# -eq 0 ]; then
	for v in 3.6 3.7; do
		for d in "$root"/versions/$v.*; do
			[ -x "$d/bin/python$v" ] || continue
			run "$d/bin/python$v (refused)" env SD_PYWALK_SO="$out/pywalk_test.so" \
				SD_PYWALK_EXPECT_UNSUPPORTED=$v "$d/bin/python$v" \
				"$here/test_pywalk.py"
		done
	done
	for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
		for d in "$root"/versions/$v.*; do
			lib="$d/lib/libpython$v.so.1.0"
			[ -f "$lib" ] || continue
			run "$lib (RTLD_LOCAL)" env PYTHONHOME="$d" \
				"$out/embed_local" "$lib"
		done
	done
fi

printf '%d passed, %d failed (logs in %s)\n' "$pass" "$fail" "$out"
[ "$fail" -eq 0 ]

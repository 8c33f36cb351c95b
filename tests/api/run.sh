#!/bin/sh
# Tests the explicit API (slowdog_begin/slowdog_end/slowdog_version) from C
# and from Python through ctypes, with the library preloaded as
# slowdog_begin(3) describes:
#
#   tests/api/run.sh [BUILD_DIR]       (default: build)
#
# job.c is compiled with cc and links nothing of slowdog: it finds the
# functions with dlsym(RTLD_DEFAULT), so it must also run without the
# preload. job.py is run under /usr/bin/python3 and every pyenv CPython
# 3.8-3.13 found. Each run with the preload must leave exactly one report
# labelled "nightly import", with the job's own frame, and a finished line;
# with SLOWDOG_DISABLE=1, slowdog_begin() must return -1 and nothing is
# logged. Exit status 1 on any failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
lib=$build/libslowdog.so
if [ ! -f "$lib" ]; then
	echo "api: no $lib (build first: ninja -C $build)" >&2
	exit 1
fi
out=$(mktemp -d /tmp/sd-api.XXXXXX)
cc=${CC:-cc}
fail=0
pass=0

ok() { printf 'PASS  %s\n' "$1"; pass=$((pass + 1)); }
bad() { # label, why, file to show
	printf 'FAIL  %s: %s\n' "$1" "$2"
	[ -n "${3:-}" ] && [ -f "$3" ] && sed 's/^/      /' "$3" | tail -60
	fail=$((fail + 1))
}

# count PATTERN FILE: lines matching the extended regular expression.
count() { grep -cE "$1" "$2" 2>/dev/null || true; }

# check_log LABEL LOG FRAME_PATTERN: one report for "nightly import" with a
# frame matching FRAME_PATTERN and its finished line; nothing else reported.
check_log() {
	label=$1 log=$2 frame=$3
	if [ ! -s "$log" ]; then
		bad "$label" "no log written" "$log"
		return
	fi
	n=$(count '^--- slowdog: slow request ---$' "$log")
	[ "$n" = 1 ] || { bad "$label" "$n reports instead of 1" "$log"; return; }
	[ "$(count '^Request:    nightly import$' "$log")" = 1 ] ||
		{ bad "$label" "no 'Request:    nightly import' line" "$log"; return; }
	[ "$(count "$frame" "$log")" -ge 1 ] ||
		{ bad "$label" "no frame matching '$frame'" "$log"; return; }
	[ "$(count '^slowdog: request [0-9]+-[0-9]+ finished after [0-9]+\.[0-9]{3} s: nightly import$' "$log")" = 1 ] ||
		{ bad "$label" "no finished line for nightly import" "$log"; return; }
	if grep -qE 'replaced job|quick task' "$log"; then
		bad "$label" "work that was replaced or quick was reported" "$log"
		return
	fi
	ok "$label"
}

# run_job LABEL LOG COMMAND...: runs a job with its output in LOG.out;
# true when it exits 0 (its own checks of the return values passed).
run_job() {
	label=$1 log=$2
	shift 2
	if "$@" >"$log.out" 2>&1; then
		return 0
	fi
	bad "$label" "the job failed (exit $?)" "$log.out"
	return 1
}

preload() { # log, command...: with the library and a 300 ms threshold
	log=$1
	shift
	env LD_PRELOAD="$lib" SLOWDOG_THRESHOLD=300ms SLOWDOG_LOG="$log" "$@"
}

# ---- C ----
job=$out/job
if ! $cc -std=gnu11 -g -O2 -Wall -Wextra -Werror -Wshadow -I"$top/include" \
	-o "$job" "$here/job.c" -lpthread -ldl; then
	echo "FAIL  compiling job.c"
	exit 1
fi
if nm -u "$job" | grep -q slowdog; then
	bad "C: job links nothing of slowdog" "$(nm -u "$job" | grep slowdog)"
else
	ok "C: job links nothing of slowdog"
fi

log=$out/c-none.log
if run_job "C: without the preload" "$log" env -u LD_PRELOAD "$job" 0.2; then
	if grep -q 'slowdog not loaded' "$log.out"; then
		ok "C: without the preload"
	else
		bad "C: without the preload" "did not say slowdog was not loaded" "$log.out"
	fi
fi

log=$out/c.log
run_job "C: preloaded" "$log" preload "$log" "$job" 1.0 &&
	check_log "C: preloaded" "$log" \
		'^  #[0-9]+ +0x[0-9a-f]+ import_rows\+0x[0-9a-f]+ \(.*/job\)$'

log=$out/c-disabled.log
if run_job "C: SLOWDOG_DISABLE=1" "$log" \
	env SLOWDOG_DISABLE=1 LD_PRELOAD="$lib" SLOWDOG_THRESHOLD=300ms \
	SLOWDOG_LOG="$log" "$job" --expect-disabled 0.5; then
	if [ -s "$log" ]; then
		bad "C: SLOWDOG_DISABLE=1" "something was logged" "$log"
	else
		ok "C: SLOWDOG_DISABLE=1"
	fi
fi

# ---- Python, through ctypes ----
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
pythons=/usr/bin/python3
for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
	for d in "$root/versions/$v".*; do
		[ -x "$d/bin/python$v" ] && pythons="$pythons $d/bin/python$v"
	done
done

first=1
for py in $pythons; do
	[ -x "$py" ] || continue
	name=$(basename "$(dirname "$(dirname "$py")")")-$(basename "$py")
	log=$out/py-$name.log
	run_job "Python $py: preloaded" "$log" \
		preload "$log" env PYTHONDONTWRITEBYTECODE=1 "$py" "$here/job.py" 1.0 &&
		check_log "Python $py: preloaded" "$log" \
			'^  File ".*job\.py", line [0-9]+, in run_job$'
	if [ "$first" = 1 ]; then
		first=0
		log=$out/py-none.log
		if run_job "Python $py: without the preload" "$log" \
			env -u LD_PRELOAD "$py" "$here/job.py" 0.2; then
			if grep -q 'slowdog not loaded' "$log.out"; then
				ok "Python $py: without the preload"
			else
				bad "Python $py: without the preload" \
					"did not say slowdog was not loaded" "$log.out"
			fi
		fi
		log=$out/py-disabled.log
		if run_job "Python $py: SLOWDOG_DISABLE=1" "$log" \
			env SLOWDOG_DISABLE=1 LD_PRELOAD="$lib" SLOWDOG_THRESHOLD=300ms \
			SLOWDOG_LOG="$log" "$py" "$here/job.py" --expect-disabled 0.5; then
			if [ -s "$log" ]; then
				bad "Python $py: SLOWDOG_DISABLE=1" "something was logged" "$log"
			else
				ok "Python $py: SLOWDOG_DISABLE=1"
			fi
		fi
	fi
done

printf '%d passed, %d failed (logs in %s)\n' "$pass" "$fail" "$out"
[ "$fail" -eq 0 ]

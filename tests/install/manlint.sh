#!/bin/sh
# Lints every man page in man/ with both renderers a user may have:
# mandoc -T lint -W warning and groff -man -ww -z. Any message fails.
#
#   tests/install/manlint.sh [MAN_DIR]        (default: man/ of the checkout)
set -u
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../../man}
fail=0
count=0

for tool in mandoc groff; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "FAIL  $tool is not installed (apt-get install mandoc groff-base)"
		exit 1
	fi
done

for page in "$dir"/*.1 "$dir"/*.3 "$dir"/*.7; do
	[ -f "$page" ] || continue
	count=$((count + 1))
	name=$(basename "$page")
	bad=0
	out=$(mandoc -T lint -W warning "$page" 2>&1)
	rc=$?
	if [ -n "$out" ] || [ "$rc" -ne 0 ]; then
		printf 'FAIL  mandoc -T lint %s (exit %d)\n%s\n' "$name" "$rc" "$out"
		bad=1
	fi
	out=$(groff -man -ww -z "$page" 2>&1)
	rc=$?
	if [ -n "$out" ] || [ "$rc" -ne 0 ]; then
		printf 'FAIL  groff -man -ww -z %s (exit %d)\n%s\n' "$name" "$rc" "$out"
		bad=1
	fi
	if [ "$bad" = 0 ]; then
		echo "PASS  $name"
	else
		fail=1
	fi
done

# The pages the project promises; a missing one must not pass silently.
for want in slowdog.1 slowdog.7 slowdog_begin.3; do
	if [ ! -f "$dir/$want" ]; then
		echo "FAIL  $want is missing from $dir"
		fail=1
	fi
done
echo "$count man pages checked"
exit "$fail"

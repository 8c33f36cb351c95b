#!/bin/bash
# Installs slowdog into a scratch DESTDIR and checks what a user gets:
#
#   tests/install/run.sh [BUILD_DIR]        (default: build)
#
#   1. meson install --destdir: the library, slowdog.h, the pkg-config file,
#      the man pages and the slowdog wrapper are where meson's options say.
#   2. The wrapper's options and errors (the installed copy, run by
#      /bin/sh): --help, --version, bad durations, no command, missing
#      option arguments, LD_PRELOAD kept, the library found next to the
#      script, through a symbolic link, from a checkout, through
#      pkg-config, or not at all.
#   3. The installed wrapper, with SLOWDOG_LIBRARY unset, in front of a real
#      server (tests/integration/stdserver.py): a slow request is reported
#      with its traceback and finished line, a fast one is not.
#
# Exit status 1 on any failure; everything is left in the printed directory.
# The commands given to sh -c are meant to expand in that shell:
# shellcheck disable=SC2016
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$top/$build ;; esac
py=/usr/bin/python3

tmp=$(mktemp -d /tmp/sd-install.XXXXXX)
dest=$tmp/dest
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
}
trap cleanup EXIT

pass=0
fail=0
ok() { printf 'PASS  %s\n' "$1"; pass=$((pass + 1)); }
bad() { # what, why, [file to show]
	printf 'FAIL  %s: %s\n' "$1" "$2"
	if [ -n "${3:-}" ] && [ -f "$3" ]; then
		sed 's/^/      /' "$3" | tail -40
	fi
	fail=$((fail + 1))
}

# ---- 1. meson install into a DESTDIR ----

if ! meson install -C "$build" --destdir "$dest" >"$tmp/install.log" 2>&1; then
	bad "meson install --destdir" "failed" "$tmp/install.log"
	echo "$pass passed, $fail failed (in $tmp)"
	exit 1
fi
ok "meson install --destdir $dest"

# Where meson put things, from its own options, so that -Dprefix=... or
# -Dlibdir=... builds are checked too.
opts=$(meson introspect --buildoptions "$build" | $py -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
for k in ("bindir", "libdir", "includedir", "mandir"):
    v = o[k]
    if not v.startswith("/"):
        v = o["prefix"].rstrip("/") + "/" + v
    print("%s=%s" % (k, v))
')
bindir=$dest$(sed -n 's/^bindir=//p' <<<"$opts")
libdir=$dest$(sed -n 's/^libdir=//p' <<<"$opts")
includedir=$dest$(sed -n 's/^includedir=//p' <<<"$opts")
mandir=$dest$(sed -n 's/^mandir=//p' <<<"$opts")
version=$(meson introspect --projectinfo "$build" |
	$py -c 'import json, sys; print(json.load(sys.stdin)["version"])')

wrapper=$bindir/slowdog
lib=$libdir/libslowdog.so

check_file() { # path, what
	if [ -f "$1" ] && [ -s "$1" ]; then
		ok "installed: $2 (${1#"$dest"})"
	else
		bad "installed: $2" "no ${1#"$dest"}" "$tmp/install.log"
	fi
}
check_file "$lib" "the library"
check_file "$includedir/slowdog.h" "the header"
check_file "$libdir/pkgconfig/slowdog.pc" "the pkg-config file"
check_file "$mandir/man1/slowdog.1" "slowdog(1)"
check_file "$mandir/man7/slowdog.7" "slowdog(7)"
check_file "$mandir/man3/slowdog_begin.3" "slowdog_begin(3)"
for alias in slowdog_end slowdog_version; do
	# Links to slowdog_begin(3), so that man slowdog_end finds it.
	f=$mandir/man3/$alias.3
	if [ -f "$f" ] && cmp -s "$f" "$mandir/man3/slowdog_begin.3"; then
		ok "installed: $alias(3) as slowdog_begin(3)"
	else
		bad "installed: $alias(3)" "no ${f#"$dest"} leading to slowdog_begin.3"
	fi
done
if [ -f "$wrapper" ] && [ -x "$wrapper" ]; then
	ok "installed: the wrapper (${wrapper#"$dest"}, executable)"
else
	bad "installed: the wrapper" "no executable ${wrapper#"$dest"}" "$tmp/install.log"
fi
if cmp -s "$includedir/slowdog.h" "$top/include/slowdog.h"; then
	ok "installed slowdog.h is include/slowdog.h"
else
	bad "installed slowdog.h" "differs from include/slowdog.h"
fi

# The pkg-config file describes the installed tree.
pc_version=$(PKG_CONFIG_LIBDIR="$libdir/pkgconfig" pkg-config --modversion slowdog 2>&1)
pc_libs=$(PKG_CONFIG_LIBDIR="$libdir/pkgconfig" pkg-config --libs slowdog 2>&1)
pc_libdir=$(PKG_CONFIG_LIBDIR="$libdir/pkgconfig" pkg-config --variable=libdir slowdog 2>&1)
if [ "$pc_version" = "$version" ] && [[ $pc_libs == *-lslowdog* ]] &&
	[ "$dest$pc_libdir" = "$libdir" ]; then
	ok "pkg-config: version $pc_version, $pc_libs, libdir $pc_libdir"
else
	bad "pkg-config" "version '$pc_version' libs '$pc_libs' libdir '$pc_libdir'"
fi

# The installed pages render cleanly, links included.
for page in "$mandir"/man1/*.1 "$mandir"/man3/*.3 "$mandir"/man7/*.7; do
	[ -f "$page" ] || continue
	out=$(cd "$mandir" && mandoc -T lint -W warning "$page" 2>&1;
		groff -man -ww -z "$page" 2>&1)
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >"$tmp/lint.out"
		bad "installed ${page#"$mandir"/} renders cleanly" "messages" "$tmp/lint.out"
	fi
done

if [ ! -x "$wrapper" ] || [ ! -f "$lib" ]; then
	echo "$pass passed, $fail failed (in $tmp)"
	exit 1
fi
reallib=$(readlink -f "$lib")

# ---- 2. the wrapper's options and errors ----

# wrap ARGS...: runs the installed wrapper as a user would, with no
# SLOWDOG_* or LD_PRELOAD from this environment; sets rc, out, err.
wrap() {
	env -u SLOWDOG_LIBRARY -u SLOWDOG_THRESHOLD -u SLOWDOG_LOG \
		-u SLOWDOG_FORMAT -u LD_PRELOAD "$wrapper" "$@" \
		>"$tmp/out" 2>"$tmp/err"
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
}

envrun() { # runs the wrapper with the given environment; sets rc, out, err
	env -u SLOWDOG_LIBRARY -u LD_PRELOAD "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
}

# expect_error WHAT STATUS ARGS...: exit STATUS, one line on stderr that
# starts with "slowdog: ", nothing on stdout, the command not run.
expect_error() {
	what=$1 want=$2
	shift 2
	rm -f "$tmp/ran"
	"$@"
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" != "$want" ]; then
		bad "$what" "exit $rc, not $want; stderr: $err"
	elif [ "$lines" != 1 ] || [[ $err != "slowdog: "* ]]; then
		bad "$what" "stderr is not one 'slowdog: ' line" "$tmp/err"
	elif [ -n "$out" ]; then
		bad "$what" "wrote to stdout" "$tmp/out"
	elif [ -e "$tmp/ran" ]; then
		bad "$what" "ran the command"
	else
		ok "$what: exit $rc, $err"
	fi
}

# expect_out WHAT WANT ARGS...: exit 0, stdout exactly WANT, stderr empty.
expect_out() {
	what=$1 want=$2
	shift 2
	"$@"
	if [ "$rc" = 0 ] && [ "$out" = "$want" ] && [ -z "$err" ]; then
		ok "$what"
	else
		bad "$what" "exit $rc, stdout '$out' (want '$want'), stderr '$err'"
	fi
}

wrap --help
if [ "$rc" = 0 ] && [[ $out == "Usage: slowdog "* ]] && [ -z "$err" ]; then
	ok "--help: usage on stdout, exit 0"
else
	bad "--help" "exit $rc, stderr '$err'" "$tmp/out"
fi
wrap -h
if [ "$rc" = 0 ] && [[ $out == "Usage: slowdog "* ]]; then
	ok "-h"
else
	bad "-h" "exit $rc"
fi
expect_out "--version is the project's version" "slowdog $version" wrap --version
expect_out "-V" "slowdog $version" wrap -V

for d in abc 0 0s 0.0 -1s 2sec 2S 1e3 . '' 's' 1..2 366d 8785h 0.5ns '2 x'; do
	expect_error "-t '$d' is refused" 2 wrap -t "$d" -- touch "$tmp/ran"
done
expect_error "--threshold=abc is refused" 2 wrap --threshold=abc touch "$tmp/ran"
for d in 2s 500ms 1.5 1.5m 1h 8784h .5 ' 2s ' '10 ms' 1ns; do
	expect_out "-t '$d' is accepted and passed on" "$d" \
		wrap -t "$d" -- sh -c 'printf %s "$SLOWDOG_THRESHOLD"'
done
expect_out "-t2s (attached)" "2s" wrap -t2s sh -c 'printf %s "$SLOWDOG_THRESHOLD"'
expect_out "--threshold=3s" "3s" wrap --threshold=3s sh -c 'printf %s "$SLOWDOG_THRESHOLD"'

expect_error "no arguments" 2 wrap
expect_error "-t 2s and no command" 2 wrap -t 2s
expect_error "-- and no command" 2 wrap --
expect_error "-t without its argument" 2 wrap -t
expect_error "-o without its argument" 2 wrap -o
expect_error "-o with an empty file name" 2 wrap -o '' touch "$tmp/ran"
expect_error "an unknown option" 2 wrap --bogus touch "$tmp/ran"
expect_error "an unknown short option" 2 wrap -x touch "$tmp/ran"
expect_error "a command that does not exist" 127 wrap -- slowdog-no-such-command
expect_error "a path that does not exist" 127 wrap -- "$tmp/no-such-file"
expect_error "SLOWDOG_LIBRARY that does not exist" 1 \
	envrun SLOWDOG_LIBRARY="$tmp/nope.so" "$wrapper" -- touch "$tmp/ran"

# What the command sees.
show='printf "%s|%s|%s|%s" "$LD_PRELOAD" "${SLOWDOG_THRESHOLD-unset}" "${SLOWDOG_LOG-unset}" "${SLOWDOG_FORMAT-unset}"'
expect_out "no options: only LD_PRELOAD is set" "$reallib|unset|unset|unset" \
	wrap sh -c "$show"
expect_out "-t -o --json set the variables" "$reallib|2s|/var/log/x.log|json" \
	wrap -t 2s -o /var/log/x.log --json -- sh -c "$show"
wrap_in_tmp() { # the wrapper run from $tmp
	cd "$tmp" || return
	wrap "$@"
	cd "$top" || return
}
expect_out "-o relative is made absolute" "$reallib|unset|$tmp/rel.log|unset" \
	wrap_in_tmp -o rel.log -- sh -c "$show"
expect_out "-o - is standard error" "$reallib|unset|stderr|unset" \
	wrap -o - -- sh -c "$show"
expect_out "--output=FILE" "$reallib|unset|/tmp/o.log|unset" \
	wrap --output=/tmp/o.log sh -c "$show"
expect_out "options after the command are the command's" "-t 2s" \
	wrap sh -c 'printf "%s %s" "$1" "$2"' sh -t 2s

expect_out "LD_PRELOAD=libm.so.6 is kept, ours appended" "libm.so.6 $reallib" \
	envrun LD_PRELOAD=libm.so.6 "$wrapper" -- sh -c 'printf %s "$LD_PRELOAD"'
expect_out "LD_PRELOAD with colons is kept" "libm.so.6:libdl.so.2 $reallib" \
	envrun LD_PRELOAD=libm.so.6:libdl.so.2 "$wrapper" -- sh -c 'printf %s "$LD_PRELOAD"'
expect_out "our library already in LD_PRELOAD is not added twice" "libm.so.6 $reallib" \
	envrun LD_PRELOAD="libm.so.6 $reallib" "$wrapper" -- sh -c 'printf %s "$LD_PRELOAD"'
# Another libslowdog.so already there: kept, ours not added, one line.
cp "$lib" "$tmp/libslowdog.so"
envrun LD_PRELOAD="$tmp/libslowdog.so" "$wrapper" -- sh -c 'printf %s "$LD_PRELOAD"'
if [ "$rc" = 0 ] && [ "$out" = "$tmp/libslowdog.so" ] &&
	[ "$(wc -l <"$tmp/err")" = 1 ] && [[ $err == "slowdog: "* ]]; then
	ok "another libslowdog.so in LD_PRELOAD is used, one line says so"
else
	bad "another libslowdog.so in LD_PRELOAD" "exit $rc, '$out', stderr '$err'"
fi
expect_out "the preloaded library really loads (libm kept too)" "yes yes" \
	envrun LD_PRELOAD=libm.so.6 "$wrapper" -- sh -c \
	'grep -q "/libslowdog.so" /proc/$$/maps && a=yes; grep -q "/libm.so.6" /proc/$$/maps && b=yes; printf "%s %s" "$a" "$b"'
expect_out "SLOWDOG_LIBRARY wins" "$tmp/libslowdog.so" \
	envrun SLOWDOG_LIBRARY="$tmp/libslowdog.so" "$wrapper" -- sh -c 'printf %s "$LD_PRELOAD"'
expect_out "other SLOWDOG_* variables pass through" "merged 7s" \
	envrun SLOWDOG_STACK=merged SLOWDOG_THRESHOLD=7s "$wrapper" -- \
	sh -c 'printf "%s %s" "$SLOWDOG_STACK" "$SLOWDOG_THRESHOLD"'
wrap -- sh -c 'exit 7'
if [ "$rc" = 7 ]; then
	ok "the command's exit status is the wrapper's"
else
	bad "exit status" "$rc, not 7"
fi
# (In a subshell: bash would print "Terminated" for a killed foreground job.)
rc=$( (wrap -- sh -c 'kill -TERM $$'; echo "$rc") 2>/dev/null)
if [ "$rc" = 143 ]; then
	ok "a command killed by SIGTERM: status 143"
else
	bad "killed command" "status $rc, not 143"
fi

# Found through a symbolic link to the installed script.
ln -s "$wrapper" "$tmp/slowdog-link"
expect_out "found next to the script through a symbolic link" "$reallib" \
	envrun "$tmp/slowdog-link" -- sh -c 'printf %s "$LD_PRELOAD"'
# From a checkout: scripts/slowdog finds build/libslowdog.so.
if [ "$build" = "$top/build" ]; then
	expect_out "scripts/slowdog in a checkout finds build/libslowdog.so" \
		"$(readlink -f "$top/build/libslowdog.so")" \
		envrun "$top/scripts/slowdog" -- sh -c 'printf %s "$LD_PRELOAD"'
fi
# Alone in a directory: through pkg-config, or not at all.
mkdir -p "$tmp/alone/bin" "$tmp/pc" "$tmp/nopc"
cp "$wrapper" "$tmp/alone/bin/slowdog"
printf 'libdir=%s\n\nName: slowdog\nDescription: test\nVersion: %s\nLibs: -L${libdir} -lslowdog\n' \
	"$libdir" "$version" >"$tmp/pc/slowdog.pc"
expect_out "found through pkg-config --variable=libdir" "$reallib" \
	envrun PKG_CONFIG_LIBDIR="$tmp/pc" PKG_CONFIG_PATH= "$tmp/alone/bin/slowdog" \
	-- sh -c 'printf %s "$LD_PRELOAD"'
expect_error "no library anywhere" 1 \
	envrun PKG_CONFIG_LIBDIR="$tmp/nopc" PKG_CONFIG_PATH= "$tmp/alone/bin/slowdog" \
	-- touch "$tmp/ran"
if [[ $err != *SLOWDOG_LIBRARY* ]]; then
	bad "no library anywhere" "the line does not say to set SLOWDOG_LIBRARY"
fi

# The same script under bash too (it is #!/bin/sh: dash on Debian).
env -u SLOWDOG_LIBRARY -u LD_PRELOAD bash "$wrapper" -t 1s -- sh -c 'printf %s "$LD_PRELOAD"' \
	>"$tmp/out" 2>"$tmp/err"
if [ "$(cat "$tmp/out")" = "$reallib" ]; then
	ok "runs under bash as well"
else
	bad "under bash" "$(cat "$tmp/out" "$tmp/err")"
fi
if command -v shellcheck >/dev/null 2>&1; then
	if shellcheck -s sh "$top/scripts/slowdog" >"$tmp/shellcheck.out" 2>&1; then
		ok "shellcheck scripts/slowdog"
	else
		bad "shellcheck scripts/slowdog" "warnings" "$tmp/shellcheck.out"
	fi
fi

# ---- 3. the installed wrapper in front of a real server ----

port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$tmp/slow.log
url=http://127.0.0.1:$port
env -u SLOWDOG_LIBRARY -u LD_PRELOAD -u SLOWDOG_THRESHOLD -u SLOWDOG_LOG \
	"$wrapper" -t 500ms -o "$log" -- \
	$py "$top/tests/integration/stdserver.py" "$port" app:app \
	>"$tmp/server.out" 2>&1 &
pid=$!

get() { # url -> body on stdout
	$py -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())' "$1"
}
up=0
for _ in $(seq 100); do
	if get "$url/fast" >/dev/null 2>&1; then
		up=1
		break
	fi
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ "$up" = 0 ]; then
	bad "server under the installed wrapper" "did not come up" "$tmp/server.out"
else
	# exec: the server is the wrapper's process, with the DESTDIR library.
	if grep -qF "$reallib" "/proc/$pid/maps"; then
		ok "the server (pid $pid) has ${reallib#"$dest"} from the DESTDIR mapped"
	else
		bad "server maps" "no $reallib in /proc/$pid/maps"
	fi
	get "$url/sleep?s=1.2" >"$tmp/slow.body"
	get "$url/fast" >"$tmp/fast.body"
	for _ in $(seq 50); do
		grep -q 'finished after' "$log" 2>/dev/null && break
		sleep 0.1
	done
	if [ "$(cat "$tmp/slow.body")" != "slept s=1.2" ]; then
		bad "the slow request's response" "'$(cat "$tmp/slow.body")'"
	elif [ "$(grep -c '^--- slowdog: slow request ---$' "$log" 2>/dev/null)" != 1 ]; then
		bad "one report in the log" "$(grep -c '^--- slowdog: slow request' "$log" 2>/dev/null) reports" "$log"
	elif ! grep -qx 'Request:    GET /sleep?s=1.2' "$log"; then
		bad "the report names the request" "no 'Request:    GET /sleep?s=1.2'" "$log"
	elif ! grep -qE '^  File ".*app\.py", line [0-9]+, in slow_sleep$' "$log"; then
		bad "the report has the Python traceback" "no frame in slow_sleep" "$log"
	elif ! grep -qE '^slowdog: request [0-9]+-[0-9]+ finished after [0-9.]+ s: GET /sleep\?s=1\.2$' "$log"; then
		bad "the finished line" "missing" "$log"
	elif grep -q 'GET /fast' "$log"; then
		bad "the fast request" "was reported" "$log"
	else
		ok "installed wrapper + stdserver.py: /sleep?s=1.2 reported (500ms threshold), /fast not"
	fi
fi

echo "$pass passed, $fail failed (in $tmp)"
[ "$fail" = 0 ]

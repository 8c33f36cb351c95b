#!/bin/bash
# slowdog under AddressSanitizer and UndefinedBehaviorSanitizer:
#
#   tests/sanitize.sh [BUILD_DIR_PREFIX]      (default: build-san)
#   CC=clang tests/sanitize.sh build-san
#
# 1. configures BUILD_DIR_PREFIX-$CC (gcc by default) with
#    -Db_sanitize=address,undefined -Db_lundef=false (a shared library built
#    with ASan leaves the runtime's symbols to the program) and
#    -Dwerror=false (gcc's -Warray-bounds misfires under ASan; the normal
#    builds keep -Werror), and builds it;
# 2. runs the unit tests (meson test) with every report fatal;
# 3. runs the C test server with the sanitized libslowdog.so preloaded,
#    twice: a plain build of tests/integration/testserver.c, with the ASan
#    runtime preloaded first (what a real, uninstrumented server is), and
#    the sanitized sd-testserver. It gets fast, slow, pipelined, HEAD, POST,
#    slowloris, aborted and garbage requests; every slow request must be
#    reported, no fast one, and no sanitizer may print anything.
#
# Exit status non-zero on any sanitizer report or failed check.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

prefix=${1:-build-san}
cc=${CC:-gcc}
build=$prefix-$(basename "$cc")
py=/usr/bin/python3
[ -x "$py" ] || py=python3

say() { printf '\n### sanitize: %s\n' "$*"; }
fail() { printf 'sanitize: FAIL: %s\n' "$*" >&2; status=1; }
status=0

# Every report is fatal and says where it came from.
export ASAN_OPTIONS=${SANITIZE_ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${SANITIZE_UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}

say "building $build ($cc, address + undefined)"
if [ ! -f "$build/build.ninja" ]; then
	CC=$cc meson setup "$build" -Db_sanitize=address,undefined \
		-Db_lundef=false -Dwerror=false -Dbuildtype=debugoptimized
fi
ninja -C "$build"
build=$(cd "$build" && pwd)

say "unit tests"
if ! meson test -C "$build" --print-errorlogs; then
	fail "unit tests"
fi
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
	"$build/meson-logs/testlog.txt" >/dev/null 2>&1; then
	grep -nE 'ERROR: (Address|Leak)Sanitizer|runtime error:' \
		"$build/meson-logs/testlog.txt" | head -20 >&2
	fail "a sanitizer report in the unit test log"
fi

# ---- the C test server, with the sanitized library preloaded ----

case $(basename "$cc") in
clang*) rt=$("$cc" -print-file-name=libclang_rt.asan-x86_64.so) ;;
*) rt=$("$cc" -print-file-name=libasan.so) ;;
esac
if [ ! -e "$rt" ]; then
	fail "no shared ASan runtime for $cc ($rt)"
	exit "$status"
fi

tmp=$(mktemp -d /tmp/sd-sanitize.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
plain=$tmp/sd-testserver-plain
cc_plain=$(command -v gcc || command -v cc)
"$cc_plain" -std=gnu11 -D_GNU_SOURCE -O2 -g -pthread \
	tests/integration/testserver.c -o "$plain"

free_port() {
	"$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The client side: prints "ok" or what went wrong, exit status 0 when every
# valid request got its answer.
cat >"$tmp/client.py" <<'EOF'
import socket, sys, threading, time

port = int(sys.argv[1])
SLOW_MS = int(sys.argv[2])
errors = []


def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(f, head=False):
    status = f.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("status %r" % status)
    length, chunked = None, False
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        if k.lower() == b"content-length":
            length = int(v)
        if k.lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if head:
        return b""
    if chunked:
        body = b""
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                f.readline()
                return body
            body += f.read(n)
            f.readline()
    return f.read(length)


def get(path, method="GET", body=None):
    try:
        s = conn()
        f = s.makefile("rb")
        extra = b""
        if body is not None:
            extra = b"Content-Length: %d\r\n" % len(body)
        s.sendall(b"%s %s HTTP/1.1\r\nHost: sanitize.test\r\n%s\r\n%s" %
                  (method.encode(), path.encode(), extra, body or b""))
        read_response(f, head=method == "HEAD")
        s.close()
    except Exception as e:
        errors.append("%s %s: %s" % (method, path, e))


def keepalive(n):
    try:
        s = conn()
        f = s.makefile("rb")
        for i in range(n):
            s.sendall(b"GET /fast?ka=%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            read_response(f)
        # two pipelined requests in one write
        s.sendall(b"GET /fast?p=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /fast?p=2 HTTP/1.1\r\nHost: h\r\n\r\n")
        read_response(f)
        read_response(f)
        s.close()
    except Exception as e:
        errors.append("keep-alive: %s" % e)


def slowloris():
    try:
        s = conn()
        f = s.makefile("rb")
        for piece in (b"GET /fast?loris=1 HT", b"TP/1.1\r\nHo", b"st: h\r\n",
                      b"\r\n"):
            s.sendall(piece)
            time.sleep(0.05)
        read_response(f)
        s.close()
    except Exception as e:
        errors.append("slowloris: %s" % e)


def rude(data, wait=0.0):
    """A client that sends something and goes away without reading."""
    try:
        s = conn()
        s.sendall(data)
        time.sleep(wait)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        s.close()
    except Exception:
        pass


slow = ["/sleep?ms=%d&id=slow-sleep" % SLOW_MS,
        "/spin?ms=%d&id=slow-spin" % SLOW_MS,
        "/recv?ms=%d&id=slow-recv" % SLOW_MS,
        "/stream?n=4&ms=%d&id=slow-stream" % (SLOW_MS // 3)]

jobs = [threading.Thread(target=get, args=(p,)) for p in slow]
jobs += [threading.Thread(target=keepalive, args=(20,)) for _ in range(3)]
jobs += [threading.Thread(target=slowloris)]
for j in jobs:
    j.start()
for i in range(40):
    get("/fast?i=%d" % i)
get("/fast?head=1", method="HEAD")
get("/post", method="POST", body=b"x" * 70000)
rude(b"GET /sleep?ms=%d&id=aborted HTTP/1.1\r\nHost: h\r\n\r\n" % SLOW_MS, 0.1)
rude(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
rude(b"GET /fast HTTP/1.1\r\nX-Big: " + b"b" * 65536)
rude(b"\0\x10\0\0garbage\r\n\x1b[2J")
for j in jobs:
    j.join()
# and the slow ones once more, all at once
jobs = [threading.Thread(target=get, args=(p + "&again=1",)) for p in slow]
for j in jobs:
    j.start()
for j in jobs:
    j.join()
if errors:
    print("\n".join(errors))
    sys.exit(1)
print("ok")
EOF

# run_server NAME EXE PRELOAD: one server run, checked.
run_server() {
	local name=$1 exe=$2 preload=$3
	local d=$tmp/$name port log pid rc=0
	mkdir -p "$d"
	port=$(free_port)
	log=$d/slowdog.log
	say "integration: $name"
	env LD_PRELOAD="$preload" \
		ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:halt_on_error=1:abort_on_error=1:log_path=$d/asan" \
		UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$d/ubsan" \
		SLOWDOG_LOG="$log" SLOWDOG_THRESHOLD=250ms \
		"$exe" "$port" >"$d/stdout" 2>"$d/stderr" &
	pid=$!
	for _ in $(seq 50); do
		"$py" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" \
			2>/dev/null && break
		sleep 0.1
	done
	if ! "$py" "$tmp/client.py" "$port" 700 >"$d/client" 2>&1; then
		fail "$name: client: $(cat "$d/client")"
	fi
	sleep 0.5 # the last "finished" lines
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null || true
	else
		wait "$pid" 2>/dev/null || rc=$?
		fail "$name: the server died during the run (status $rc)"
	fi

	# Sanitizers: nothing at all.
	if compgen -G "$d/asan*" >/dev/null || compgen -G "$d/ubsan*" >/dev/null; then
		cat "$d"/asan* "$d"/ubsan* 2>/dev/null | head -60 >&2 || true
		fail "$name: sanitizer report"
	fi
	if grep -qE 'Sanitizer|runtime error:' "$d/stderr"; then
		head -60 "$d/stderr" >&2 || true
		fail "$name: sanitizer output on stderr"
	fi
	if grep -q '^slowdog:' "$d/stderr"; then
		grep '^slowdog:' "$d/stderr" | head -5 >&2 || true
		fail "$name: slowdog complained on stderr"
	fi

	# Reports: every slow request twice (two rounds), no fast one.
	local what n
	for what in slow-sleep slow-spin slow-recv slow-stream; do
		n=$(grep -c "^Request: .*id=$what" "$log" 2>/dev/null || true)
		if [ "${n:-0}" -lt 2 ]; then
			fail "$name: $what reported ${n:-0} times, want 2"
		fi
	done
	if grep -q '^Request: .*/fast' "$log" 2>/dev/null; then
		fail "$name: a fast request was reported"
	fi
	n=$(grep -c '^--- slowdog: slow request ---' "$log" 2>/dev/null || true)
	echo "sanitize: $name: ${n:-0} reports, log $log"
	if ((status)); then
		cp -r "$d" "$build/sanitize-$name" 2>/dev/null &&
			echo "sanitize: $name: files kept in $build/sanitize-$name" >&2
	fi
}

run_server plain "$plain" "$rt $build/libslowdog.so"

asan_exe=$build/tests/sd-testserver
if [ -x "$asan_exe" ]; then
	# gcc links the shared runtime into the program: preload it first
	# all the same; clang links a static one, which must then be alone.
	if ldd "$asan_exe" | grep -q "$(basename "$rt")"; then
		run_server instrumented "$asan_exe" "$rt $build/libslowdog.so"
	else
		run_server instrumented "$asan_exe" "$build/libslowdog.so"
	fi
else
	fail "no $asan_exe"
fi

if ((status)); then
	say "FAILED"
else
	say "ok"
fi
exit "$status"

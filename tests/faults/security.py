#!/usr/bin/python3
"""Security tests: what a client or a local user can do to slowdog's log.

usage: tests/faults/security.py [BUILD_DIR] [-k FILTER]...

  * secure execution: a set-group-ID program linked with the library runs
    with AT_SECURE; no SLOWDOG_* variable may be honoured there (not
    SLOWDOG_DISABLE, not SLOWDOG_LOG, not SLOWDOG_THRESHOLD). Needs root
    (to give the program another group) and a file system without nosuid;
    skipped, and said, otherwise. Python cannot be tested this way: an
    interpreter is no set-ID program, and the loader ignores LD_PRELOAD
    paths in a secure process, so a C program links the library instead.
  * the log is never opened through a symbolic link: not when SLOWDOG_LOG
    names one (one warning, reports on standard error, the link's target
    untouched, a dangling link's target not created), not when a link
    replaces the log after a rotation;
  * a new log is created with mode 0600 whatever the umask, and its
    descriptor is not inherited across exec;
  * request bytes cannot forge a record or reach a terminal: raw request
    lines and Host headers holding newlines, carriage returns, "--- slowdog"
    markers, ESC sequences, backslashes, NUL and bytes above 0x7f, sent to a
    server that parses nothing itself, come out escaped in text and JSON
    logs, which parse with no error and hold no control byte;
  * memory per connection is bounded: hundreds of 1 MiB heads made of 64 KiB
    header lines, and hundreds of connections holding half a 64 KiB line
    at once, leave the server's VmRSS where it was after the first ones.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
from harness import PY, ROOT, STDSERVER, slowlog  # noqa: E402
BUILD = harness.build_dir()
LIB = harness.library(BUILD)

failures = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else ": " + detail))
    sys.stdout.flush()
    if not cond:
        failures.append(name)


def note(msg):
    print("note " + msg)


class Server(harness.Server):
    def __init__(self, cmd, env, tmp, umask=None):
        e = harness.env(LIB, os.path.join(tmp, "slow.log"), "300ms", PYTHONPATH=HERE)
        e.update(env)
        harness.Server.__init__(self, cmd, e, os.path.join(tmp, "stderr"), cwd=HERE,
                                umask=umask)

    def get(self, path):
        return self.send(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % path).encode()).split(b"\r\n\r\n", 1)[-1].decode()


def stdserver(env, tmp, umask=None):
    return Server([PY, STDSERVER, "PORT", "faultapp:app"], env, tmp, umask)


def rawserver(env, tmp, mode, *args):
    return Server([PY, os.path.join(HERE, "rawserver.py"), "PORT", mode] + list(args),
                  env, tmp)


# ---------------------------------------------------------------- secure mode

def test_secure_mode():
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if os.geteuid() != 0:
        note("secure mode: not root, cannot make a set-group-ID program: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        exe = os.path.join(tmp, "secure")
        r = subprocess.run([cc, "-std=gnu11", "-I", os.path.join(ROOT, "include"),
                            os.path.join(HERE, "secure.c"), "-o", exe, "-L", BUILD,
                            "-lslowdog", "-Wl,-rpath," + BUILD],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        check("secure mode: test program builds", r.returncode == 0,
              r.stdout.decode(errors="replace")[-500:])
        if r.returncode:
            return

        def run(env):
            e = {k: v for k, v in os.environ.items()
                 if not k.startswith("SLOWDOG_") and k != "LD_PRELOAD"}
            e.update(env)
            p = subprocess.run([exe], env=e, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=20)
            return p.stdout.decode().strip(), p.stderr.decode()

        ctl = os.path.join(tmp, "control.log")
        out, err = run({"SLOWDOG_THRESHOLD": "100ms", "SLOWDOG_LOG": ctl})
        text = open(ctl).read() if os.path.exists(ctl) else ""
        check("secure mode control: settings honoured in a normal process",
              out == "secure=0 begin=0 end=0" and "Request:    secure job" in text,
              "%r %r %r" % (out, err, text[:300]))
        out, err = run({"SLOWDOG_DISABLE": "1"})
        check("secure mode control: SLOWDOG_DISABLE honoured in a normal process",
              out == "secure=0 begin=-1 end=-1", repr(out))

        # Set-group-ID to a group we are not in: the kernel sets AT_SECURE.
        os.chown(exe, 0, 65534)
        os.chmod(exe, 0o2755)
        sec = os.path.join(tmp, "secure.log")
        out, err = run({"SLOWDOG_DISABLE": "1", "SLOWDOG_THRESHOLD": "100ms",
                        "SLOWDOG_LOG": sec, "SLOWDOG_DEBUG": "1"})
        if out.startswith("secure=0"):
            note("secure mode: AT_SECURE not set for a set-group-ID program "
                 "(nosuid file system?): skipped")
            return
        check("secure mode: SLOWDOG_DISABLE not honoured", out ==
              "secure=1 begin=0 end=0", repr(out))
        check("secure mode: SLOWDOG_LOG not honoured (no file made)",
              not os.path.exists(sec), "log file created")
        check("secure mode: SLOWDOG_THRESHOLD and SLOWDOG_DEBUG not honoured "
              "(nothing said about 0.5 s of work)", "slowdog" not in err, err[:500])


# ---------------------------------------------------------------- the log file

def test_symlink():
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "precious")
        with open(target, "w") as f:
            f.write("precious\n")
        link = os.path.join(tmp, "slow.log")
        os.symlink(target, link)
        s = stdserver({"SLOWDOG_LOG": link}, tmp)
        try:
            body = s.get("/spin?s=0.6")
            time.sleep(0.2)
        finally:
            err = s.stop()
        with open(target) as f:
            kept = f.read()
        lines = [l for l in err.splitlines() if l.startswith("slowdog:")]
        check("symlink log: target untouched", kept == "precious\n", kept[:200])
        check("symlink log: server answers", body.strip() == "ok", repr(body))
        check("symlink log: one warning line",
              len([l for l in lines if "cannot open SLOWDOG_LOG" in l]) == 1,
              repr(lines))
        check("symlink log: the report on standard error",
              "--- slowdog: slow request ---" in err, err[:300])

    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "created-through-link")
        link = os.path.join(tmp, "slow.log")
        os.symlink(target, link)
        s = stdserver({"SLOWDOG_LOG": link}, tmp)
        try:
            s.get("/spin?s=0.6")
        finally:
            s.stop()
        check("dangling symlink log: its target is not created",
              not os.path.exists(target), "created")

    # A local user swaps the log for a link after a rotation.
    with tempfile.TemporaryDirectory() as tmp:
        victim = os.path.join(tmp, "victim")
        with open(victim, "w") as f:
            f.write("victim\n")
        s = stdserver({}, tmp)
        try:
            s.get("/spin?s=0.6&n=1")
            s.wait_log(rb"finished after .*n=1")
            os.rename(s.log, s.log + ".1")
            os.symlink(victim, s.log)
            s.get("/spin?s=0.6&n=2")
            got = harness.wait_log(s.log + ".1", rb"finished after .*n=2")
        finally:
            err = s.stop()
        with open(victim) as f:
            kept = f.read()
        check("symlink after rotation: not followed", kept == "victim\n", kept[:200])
        check("symlink after rotation: the report kept in the old file",
              got or "n=2" in err, err[:300])


def test_permissions():
    with tempfile.TemporaryDirectory() as tmp:
        s = stdserver({}, tmp, umask=0)
        try:
            s.get("/spin?s=0.6")
            s.wait_log(rb"finished after")
            fds = s.get("/childfds")
        finally:
            s.stop()
        mode = stat.S_IMODE(os.stat(s.log).st_mode) if os.path.exists(s.log) else None
        check("new log mode 0600 with umask 0", mode == 0o600, oct(mode or 0))
        check("the log's descriptor is not inherited across exec",
              "ls" in fds and s.log not in fds, fds[-800:])


# ---------------------------------------------------------------- forging

EVIL = [
    # (request bytes, a fragment its report's Request line must hold)
    (b"GET /a\n--- slowdog: slow request ---\nRequest:    GET /forged\n\n"
     b"--- end of slowdog report 1-1 ---\nslowdog: request 1-1 finished after "
     b"1.000 s: GET /x HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET /b\r--- slowdog: slow request ---\r HTTP/1.1\r\nHost: b\r\n\r\n", "/b\\x0d"),
    (b"GET /c?\x1b[31mRED\x1b[0m\x1b]0;title\x07\x9b2J HTTP/1.1\r\n"
     b"Host: \x1b[2Jevil\r\n\r\n", "\\x1b[31mRED\\x1b[0m\\x1b]0;title\\x07\\x9b2J"),
    (b"GET /d?x=\\x41\\n HTTP/1.1\r\nHost: d\r\n\r\n", "/d?x=\\x5cx41\\x5cn"),
    (b"GET /e?\x00\xff\xfe\x85\x7f HTTP/1.1\r\nHost: e\r\n\r\n",
     "/e?\\x00\\xff\\xfe\\x85\\x7f"),
    (b"GET /f" + b"A" * 600 + b"\n--- slowdog: slow request ---\n HTTP/1.1\r\n\r\n", None),
    (b"GET /g HTTP/1.1\r\nHost: g\r\n--- end of slowdog report 1-1 ---\r\n"
     b"X: \n--- slowdog: slow request ---\r\n\r\n", None),
    (b"G\x1bET /h HTTP/1.1\r\nHost: h\r\n\r\n", None),
    (b"GET /i HTTP/1.1\r\nHost: \r\n--- slowdog: slow request ---\r\n\r\n", None),
    (b"\x1b[2J\x1b[H--- slowdog: slow request ---\r\n\r\n", None),
]


def control_bytes(data):
    return sorted(set(c for c in data if (c < 0x20 and c != 0x0a) or c == 0x7f))


def test_forging():
    for fmt in ("text", "json"):
        with tempfile.TemporaryDirectory() as tmp:
            s = rawserver({"SLOWDOG_FORMAT": fmt}, tmp, "slow", "0.7")
            out = {}

            def one(i, data):
                try:
                    out[i] = s.send(data)
                except OSError as e:
                    out[i] = repr(e).encode()
            ts = [threading.Thread(target=one, args=(i, d)) for i, (d, _) in
                  enumerate(EVIL)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            time.sleep(0.5)
            err = s.stop()
            raw = s.logbytes()
        check("forging (%s): every request answered" % fmt,
              all(v.endswith(b"ok\n") for v in out.values()) and len(out) == len(EVIL),
              repr(out)[:300])
        check("forging (%s): no control byte in the log" % fmt,
              not control_bytes(raw), repr(control_bytes(raw)))
        check("forging (%s): nothing on standard error" % fmt,
              "slowdog" not in err, err[:300])
        text = raw.decode("utf-8", "replace")
        if fmt == "text":
            reports, finished, errors = slowlog.parse(text)
            check("forging (text): the log parses", not errors, repr(errors[:3]))
            begins = [l for l in text.split("\n") if l == slowlog.BEGIN]
            check("forging (text): one record per request, no more",
                  len(reports) == len(EVIL) == len(begins) and
                  len(finished) == len(EVIL),
                  "%d reports, %d begin lines, %d finished for %d requests"
                  % (len(reports), len(begins), len(finished), len(EVIL)))
            requests = [r.request or "" for r in reports]
            hosts = [r.fields.get("Host", "") for r in reports]
        else:
            objs, bad = [], []
            for line in text.split("\n")[:-1]:
                try:
                    objs.append(json.loads(line))
                except ValueError:
                    bad.append(line[:200])
            check("forging (json): every line one JSON object",
                  not bad and text.endswith("\n"), repr(bad[:3]))
            reps = [o for o in objs if o.get("type") == "report"]
            fins = [o for o in objs if o.get("type") == "finished"]
            check("forging (json): one record per request, no more",
                  len(reps) == len(fins) == len(EVIL),
                  "%d reports, %d finished" % (len(reps), len(fins)))
            requests = ["%s %s" % ((o.get("request") or {}).get("method"),
                                   (o.get("request") or {}).get("target")) for o in reps]
            hosts = [(o.get("request") or {}).get("host") or "" for o in reps]
            requests += [json.dumps(o) for o in reps]  # no raw byte anywhere
        for frag in [f for _, f in EVIL if f]:
            check("forging (%s): escaped as %s" % (fmt, frag),
                  any(frag in r for r in requests), repr(requests)[:600])
        check("forging (%s): Host escaped" % fmt,
              any("\\x1b[2Jevil" in h for h in hosts), repr(hosts))


# ---------------------------------------------------------------- memory

def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


HUGE = (b"GET /huge HTTP/1.1\r\nHost: h\r\n" +
        b"".join(b"X-Big-%02d: %s\r\n" % (i, b"x" * 65536) for i in range(16)) + b"\r\n")


def test_memory():
    with tempfile.TemporaryDirectory() as tmp:
        s = rawserver({}, tmp, "mem")
        pid = s.p.pid

        def huge(n):
            for _ in range(n):
                s.send(HUGE)

        def held(n):
            # n connections at once, each with half a 64 KiB header line
            # in flight, then each finished.
            socks = []
            for i in range(n):
                c = socket.create_connection(("127.0.0.1", s.port), 20)
                c.sendall(b"GET /held HTTP/1.1\r\nX-Half: " + b"y" * 32768)
                socks.append(c)
            time.sleep(0.2)
            for c in socks:
                c.sendall(b"y" * 32768 + b"\r\n\r\n")
            for c in socks:
                while c.recv(65536):
                    pass
                c.close()

        def rounds(k):
            for _ in range(k):
                ts = [threading.Thread(target=huge, args=(25,)) for _ in range(4)]
                ts.append(threading.Thread(target=held, args=(200,)))
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
        try:
            rounds(1)
            time.sleep(0.3)
            before = vmrss(pid)
            t0 = time.monotonic()
            rounds(4)
            took = time.monotonic() - t0
            time.sleep(0.3)
            after = vmrss(pid)
            alive = s.p.poll() is None
        finally:
            s.stop()
        note("memory: VmRSS %d KiB -> %d KiB after %d MiB of heads over %d "
             "connections in %.1f s" % (before, after, 4 * 100, 4 * 300, took))
        check("memory: server alive", alive, "")
        check("memory: VmRSS flat (grew %d KiB, bound 512 KiB)" % (after - before),
              after - before < 512, "")
        check("memory: no report (nothing was slow)", s.logbytes() == b"",
              s.logbytes()[:300].decode(errors="replace"))


TESTS = (test_secure_mode, test_symlink, test_permissions, test_forging, test_memory)


def main():
    if not os.path.exists(LIB):
        print("error: no %s (build first)" % LIB)
        return 2
    filters = [a for a in sys.argv[2:] if a != "-k"]
    for t in TESTS:
        if filters and not any(f in t.__name__ for f in filters):
            continue
        t0 = time.monotonic()
        try:
            t()
        except Exception as e:  # a broken test is a failure, not a crash
            check(t.__name__, False, repr(e))
        print("     (%s: %.1f s)" % (t.__name__, time.monotonic() - t0))
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

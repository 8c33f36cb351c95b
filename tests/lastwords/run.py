#!/usr/bin/python3
"""Last words: workers killed mid-request, in real servers.

    run.py BUILD_DIR [-k NAME]...

gunicorn (sync) and uWSGI (master, processes) serve tests/lastwords/
lwapp.py with libslowdog.so preloaded; requests get stuck in a sleep, a
regex, C code that never returns to Python, or a crash, and their worker
is killed: by gunicorn's --timeout (SIGABRT, then SIGKILL), by uWSGI's
harakiri (SIGKILL), by kill -9 from outside, by a segfault. Each case
checks the parsed log (the report with Last-Words and the function that
was stuck, and the master's "never finished" record with how the worker
died) and the server's own logs; the quiet cases check that nothing is
written. Cases run three at a time.
"""

import os
import re
import json
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness  # noqa: E402
from harness import slowlog  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = harness.build_dir()
LIB = harness.library(BUILD)
TMP = os.path.join(BUILD, "lastwords-tests")
PY = harness.PY


def fire(port, path):
    """A request in its own thread; its answer (or the error) is kept."""
    box = {}

    def go():
        try:
            box["body"] = harness.get(port, path, timeout=60)
        except Exception as e:  # the worker dies: that is the point
            box["error"] = repr(e)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    box["thread"] = t
    return box


class Case(object):
    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(TMP, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "slowdog.log")
        if os.path.exists(self.log):
            os.unlink(self.log)
        self.problems = []
        self.servers = []

    def check(self, cond, what):
        if not cond:
            self.problems.append(what)
        return cond

    def env(self, threshold="8s", preload=True, **extra):
        e = harness.env(LIB if preload else None, self.log, threshold, **extra)
        e["PYTHONPATH"] = HERE
        return e

    def gunicorn(self, timeout=3, threshold="8s", preload=True, workers=1, args=(),
                 **extra):
        s = harness.Server(
            [PY, "-m", "gunicorn"] + list(args) + ["-w", str(workers), "--timeout", str(timeout),
             "--graceful-timeout", "2", "-b", "127.0.0.1:PORT", "lwapp:app"],
            self.env(threshold, preload, **extra),
            os.path.join(self.dir, "gunicorn%s.out" % ("" if preload else "-plain")),
            cwd=HERE, session=True, log=self.log)
        self.servers.append(s)
        return s

    def uvicorn_worker(self, preload=True):
        s = harness.Server(
            [PY, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "1",
             "--timeout", "3", "-b", "127.0.0.1:PORT", "lwasgi:app"],
            self.env("1s", preload),
            os.path.join(self.dir, "uvicorn%s.out" % ("" if preload else "-plain")),
            cwd=HERE, session=True, log=self.log)
        self.servers.append(s)
        return s

    def uwsgi(self, harakiri=3, threshold="8s"):
        s = harness.Server(
            ["uwsgi", "--plugin", "python3", "--master", "--processes", "2",
             "--harakiri", str(harakiri), "--http-socket", "127.0.0.1:PORT",
             "--wsgi-file", os.path.join(HERE, "lwapp.py"), "--callable", "app",
             "--die-on-term"],
            self.env(threshold), os.path.join(self.dir, "uwsgi.out"),
            cwd=HERE, session=True, log=self.log)
        self.servers.append(s)
        return s

    def parsed(self):
        reports, finished, died, errors = slowlog.parse_all(harness.read_log(self.log))
        for e in errors:
            self.problems.append("log: " + e)
        return reports, finished, died

    def wait_died(self, n, timeout=15):
        return harness.wait_for(lambda: len(slowlog.parse_all(
            harness.read_log(self.log))[2]) >= n, timeout)

    def report_for(self, reports, path, last_words=True):
        for r in reports:
            if r.request == "GET " + path and (("Last-Words" in r.fields) == last_words):
                return r
        return None

    def has_func(self, rep, func):
        return any(f.func == func for f in rep.py_frames)

    def close(self):
        for s in self.servers:
            s.stop()


def worker_pids(server):
    return [p for p in server.group_pids() if p != server.pid]


# ---------------------------------------------------------------- cases

def case_gunicorn_timeout_sleep(c):
    """--timeout 3, threshold 8 s, time.sleep(20): gunicorn's SIGABRT;
    the report is written from slowdog's handler before gunicorn's own
    handler unwinds the thread."""
    s = c.gunicorn()
    box = fire(s.port, "/sleep?s=20")
    c.check(c.wait_died(0) and harness.wait_log(c.log, r"Last-Words: SIGABRT", 12),
            "no last-words report within 12 s")
    box["thread"].join(15)
    reports, finished, died = c.parsed()
    r = c.report_for(reports, "/sleep?s=20")
    if c.check(r, "no report of GET /sleep?s=20 with Last-Words: %r" % reports):
        lw = r.fields["Last-Words"]
        c.check(re.match(r"SIGABRT from pid %d \(the parent\), [34]\.\d{3} s into the request$"
                         % s.pid, lw), "Last-Words: %r" % lw)
        c.check(c.has_func(r, "nap"), "nap not in the Python stack: %r" % r.py_frames)
        c.check(r.capture.startswith("in the handler of the deadly signal"),
                "capture: %r" % r.capture)
    c.check("WORKER TIMEOUT" in s.output(), "gunicorn did not time the worker out")


def case_gunicorn_timeout_c_code(c):
    """C code that never returns to Python: gunicorn's handler never runs,
    SIGKILL follows a second later; the report comes from slowdog's handler
    of SIGABRT, the death record from the master."""
    s = c.gunicorn()
    fire(s.port, "/pbkdf")
    c.check(c.wait_died(1, 15), "no death record within 15 s")
    reports, finished, died = c.parsed()
    r = c.report_for(reports, "/pbkdf")
    if c.check(r, "no report of GET /pbkdf with Last-Words"):
        c.check(r.fields["Last-Words"].startswith("SIGABRT from pid %d (the parent)" % s.pid),
                "Last-Words: %r" % r.fields["Last-Words"])
        c.check(c.has_func(r, "derive_key"), "derive_key not in the stack: %r" % r.py_frames)
    d = [x for x in died if x.request == "GET /pbkdf"]
    if c.check(len(d) == 1, "death records: %r" % died):
        c.check(re.match(r"killed by SIGKILL from the parent \d\.\d{3} s after SIGABRT$",
                         d[0].how), "died how: %r" % d[0].how)
        c.check(r and d[0].request_id == r.request_id, "ids differ")
    c.check(re.search(r"Worker with pid \d+ was terminated due to signal 9|"
                      r"Worker \(pid:\d+\) was sent SIGKILL", s.output()),
            "gunicorn's own line about the kill is missing")


def case_gunicorn_regex(c):
    """A regex holding the GIL in _sre; gunicorn's SIGABRT."""
    s = c.gunicorn()
    fire(s.port, "/regex")
    c.check(harness.wait_log(c.log, r"Last-Words: SIGABRT", 12), "no last-words report")
    reports, finished, died = c.parsed()
    r = c.report_for(reports, "/regex")
    if c.check(r, "no report of GET /regex"):
        c.check(c.has_func(r, "regex_burn"), "regex_burn not in the stack: %r" % r.py_frames)


def crash_case(c, faulthandler):
    extra = {"LW_FAULTHANDLER": "1"} if faulthandler else {}
    plain = c.gunicorn(timeout=30, preload=False, **extra)
    fire(plain.port, "/segv")
    harness.wait_for(lambda: "signal 11" in plain.output(), 10)
    s = c.gunicorn(timeout=30, **extra)
    fire(s.port, "/segv")
    c.check(c.wait_died(1, 10), "no death record within 10 s")
    reports, finished, died = c.parsed()
    r = c.report_for(reports, "/segv")
    if c.check(r, "no crash report of GET /segv"):
        c.check(re.match(r"SIGSEGV in this thread \(address 0x0\), a crash, 0\.\d{3} s",
                         r.fields["Last-Words"]), "Last-Words: %r" % r.fields["Last-Words"])
        c.check(c.has_func(r, "crash_in_c"), "crash_in_c not in the stack: %r" % r.py_frames)
    c.check(any(x.how.startswith("killed by SIGSEGV") for x in died),
            "death records: %r" % died)
    # The worker died exactly as it would have: gunicorn says the same.
    line = re.compile(r"Worker with pid \d+ was terminated due to signal (\d+)")
    a, b = line.findall(plain.output()), line.findall(s.output())
    c.check(a == ["11"] and b == ["11"], "gunicorn's lines: %r without, %r with" % (a, b))
    if faulthandler:
        c.check("Fatal Python error: Segmentation fault" in s.output(),
                "faulthandler's own dump is missing")
        c.check("crash_in_c" in s.output(), "faulthandler's traceback lacks crash_in_c")


def case_crash(c):
    """A segfault in C during a request: a crash report, then the worker
    dies by SIGSEGV as it would have."""
    crash_case(c, False)


def case_crash_faulthandler(c):
    """The same with the application's faulthandler installed: it still
    dumps its traceback, after slowdog's report."""
    crash_case(c, True)


def case_threshold_under_timeout(c):
    """Threshold 1 s, --timeout 3: the slow report first, then the last
    words of the same request."""
    s = c.gunicorn(threshold="1s")
    fire(s.port, "/pbkdf")
    c.check(c.wait_died(1, 15), "no death record")
    reports, finished, died = c.parsed()
    slow = c.report_for(reports, "/pbkdf", last_words=False)
    last = c.report_for(reports, "/pbkdf", last_words=True)
    c.check(slow and last, "reports: %r" % reports)
    if slow and last:
        c.check(slow.request_id == last.request_id, "two requests?")
        c.check(reports.index(slow) < reports.index(last), "order")
        c.check(c.has_func(last, "derive_key"), "derive_key not in the stack")


def case_uwsgi_harakiri(c):
    """uWSGI's harakiri SIGKILLs the worker: it is told first and writes
    its report; the master writes the death records."""
    s = c.uwsgi()
    fire(s.port, "/sleep?s=30")
    fire(s.port, "/pbkdf")
    c.check(c.wait_died(2, 20), "fewer than two death records within 20 s")
    reports, finished, died = c.parsed()
    master = s.pid
    for path, func in (("/sleep?s=30", "nap"), ("/pbkdf", "derive_key")):
        r = c.report_for(reports, path)
        if c.check(r, "no last-words report of %s: %r" % (path, reports)):
            c.check(r.fields["Last-Words"].startswith(
                "SIGKILL coming from pid %d (the parent)" % master),
                "Last-Words: %r" % r.fields["Last-Words"])
            c.check(c.has_func(r, func), "%s not in the stack of %s" % (func, path))
        d = [x for x in died if x.request == "GET " + path]
        c.check(len(d) == 1 and d[0].how == "killed by SIGKILL from the parent",
                "death records of %s: %r" % (path, d))
    top = subprocess.run([PY, os.path.join(harness.ROOT, "scripts", "slowdog-top"), c.log],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    c.check(re.search(r"Requests that never finished: 2 died with their worker", top) and
            re.search(r"^ +1  GET /pbkdf$", top, re.M),
            "slowdog-top does not list them:\n" + top)
    out = s.output()
    c.check(len(re.findall(r"HARAKIRI ON WORKER", out)) >= 2, "no harakiri in uWSGI's log")
    c.check(len(re.findall(r"DAMN ! worker \d+ \(pid: \d+\) died, killed by signal 9", out)) >= 2,
            "uWSGI's DAMN lines changed or missing")


def case_kill9_outside(c):
    """kill -9 from outside: the master says it was not from the parent."""
    s = c.gunicorn(timeout=60, threshold="500ms")
    fire(s.port, "/sleep?s=20")
    c.check(harness.wait_log(c.log, r"--- end of slowdog report", 10), "no slow report")
    for p in worker_pids(s):
        os.kill(p, signal.SIGKILL)
    c.check(c.wait_died(1, 10), "no death record")
    reports, finished, died = c.parsed()
    c.check(len(died) == 1 and re.match(r"killed by SIGKILL(, not from the parent| by the OOM killer)",
                                        died[0].how) and died[0].request == "GET /sleep?s=20",
            "death records: %r" % died)


def case_gthread_shutdown(c):
    """gthread, a graceful shutdown that runs out of time: the master sends
    SIGTERM, then SIGKILL after --graceful-timeout and exits without reaping;
    the workers' last words come at the SIGTERM (the requests are past the
    threshold), the death records from the master's exit."""
    s = c.gunicorn(timeout=30, threshold="1s", args=["-k", "gthread", "--threads", "4"])
    fire(s.port, "/sleep?s=20")
    fire(s.port, "/pbkdf")
    c.check(harness.wait_for(lambda: len(slowlog.parse_all(harness.read_log(c.log))[0]) >= 2,
                             10), "no slow reports")
    s.stop(timeout=15)
    c.check(c.wait_died(2, 5), "fewer than two death records")
    reports, finished, died = c.parsed()
    for path in ("/sleep?s=20", "/pbkdf"):
        r = c.report_for(reports, path)
        c.check(r and r.fields["Last-Words"].startswith("SIGTERM from pid %d (the parent)"
                                                        % s.pid), "last words of %s: %r" % (path, r))
        d = [x for x in died if x.request == "GET " + path]
        c.check(len(d) == 1 and re.match(
            r"killed by SIGKILL from the parent [23]\.\d{3} s after SIGTERM$", d[0].how),
            "death records of %s: %r" % (path, died))


def case_json(c):
    """JSON lines: the report's last_words and capture mode, the master's
    "died" record; slowdog-top reads both."""
    s = c.gunicorn(SLOWDOG_FORMAT="json")
    fire(s.port, "/pbkdf")
    c.check(harness.wait_for(lambda: '"type":"died"' in harness.read_log(c.log), 15),
            "no died record")
    recs = [json.loads(x) for x in harness.read_log(c.log).splitlines() if x.strip()]
    rep = [r for r in recs if r["type"] == "report" and r.get("last_words")]
    died = [r for r in recs if r["type"] == "died"]
    if c.check(rep, "no report with last_words: %r" % recs):
        lw = rep[0]["last_words"]
        c.check(lw["signal"] == "SIGABRT" and lw["sender"] == "parent" and
                lw["from_pid"] == s.pid and rep[0]["capture"]["mode"] == "handler",
                "last_words: %r, capture %r" % (lw, rep[0]["capture"]))
    if c.check(len(died) == 1, "died records: %r" % died):
        d = died[0]
        c.check(d["death"]["signal"] == "SIGKILL" and d["death"]["sent_by"] == "parent" and
                d["request"] == "GET /pbkdf" and d["written_by"] == s.pid and
                d["request_id"] == rep[0]["request_id"] if rep else False,
                "died: %r" % d)
    top = subprocess.run([PY, os.path.join(harness.ROOT, "scripts", "slowdog-top"),
                          "--json", c.log], stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    try:
        t = json.loads(top)
        c.check(t["died"] == 1 and t["never_finished"][0]["endpoint"] == "GET /pbkdf",
                "slowdog-top --json: %r" % t)
    except ValueError:
        c.check(False, "slowdog-top --json: %r" % top)


def case_uvicorn_worker(c):
    """UvicornWorker resets SIGABRT to its default: gunicorn's timeout
    kills the worker with SIGABRT and a core, with slowdog as without; the
    report comes first."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        c.check(False, "uvicorn is not installed (python3-uvicorn)")
        return
    line = re.compile(r"Worker with pid \d+ was terminated due to signal (\d+)")
    seen = []
    for preload in (False, True):
        s = c.uvicorn_worker(preload)
        fire(s.port, "/block")
        harness.wait_for(lambda: line.search(s.output()), 15)
        seen.append(line.findall(s.output()))
        if preload:
            c.check(c.wait_died(1, 5), "no death record")
        s.stop()
    c.check(seen == [["6"], ["6"]], "gunicorn's lines: %r without, %r with" % tuple(seen))
    reports, finished, died = c.parsed()
    r = c.report_for(reports, "/block")
    if c.check(r, "no last-words report: %r" % reports):
        c.check(r.fields["Last-Words"].startswith("SIGABRT from pid"), r.fields["Last-Words"])
        c.check(c.has_func(r, "block_the_loop"), "block_the_loop not in the stack")
    c.check([d.how for d in died] == ["killed by SIGABRT from the parent"] or
            [d.how for d in died] == ["killed by SIGABRT from the parent (core dumped)"],
            "death records: %r" % died)


def memory_cgroup(name):
    """A child memory cgroup of ours limited to 256 MiB without swap, as
    (directory, procs file), or None where the machine allows none."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "memory":
            d = "/sys/fs/cgroup/memory" + parts[2].rstrip("/") + "/" + name
            limits = [("memory.limit_in_bytes", "268435456"),
                      ("memory.memsw.limit_in_bytes", "268435456")]
        elif parts[0] == "0" and parts[1] == "" and os.path.exists(
                "/sys/fs/cgroup" + parts[2].rstrip("/") + "/memory.max"):
            d = "/sys/fs/cgroup" + parts[2].rstrip("/") + "/" + name
            limits = [("memory.max", "268435456"), ("memory.swap.max", "0")]
        else:
            continue
        try:
            os.mkdir(d)
            for k, v in limits:
                if os.path.exists(os.path.join(d, k)):
                    with open(os.path.join(d, k), "w") as f:
                        f.write(v)
            return d
        except OSError:
            return None
    return None


def case_oom(c):
    """Memory exhaustion under a cgroup limit: the OOM killer's SIGKILL,
    told apart by the cgroup's count of OOM kills (where the machine lets
    a test make a memory cgroup; otherwise the case says so and passes)."""
    d = memory_cgroup("slowdog-oom-%d" % os.getpid())
    if not d:
        print("     oom: no memory cgroup can be made here; not run")
        return
    try:
        e = c.env("100ms")
        s = harness.Server(
            ["sh", "-c", 'echo $$ > %s/cgroup.procs && exec "$@"' % d, "sh",
             PY, "-m", "gunicorn", "-w", "1", "--timeout", "60", "-b",
             "127.0.0.1:PORT", "lwapp:app"],
            e, os.path.join(c.dir, "gunicorn.out"), cwd=HERE, session=True, log=c.log)
        c.servers.append(s)
        fire(s.port, "/hog")
        c.check(c.wait_died(1, 30), "no death record within 30 s: %s" % s.output()[-500:])
        reports, finished, died = c.parsed()
        c.check(len(died) == 1 and re.match(
            r"killed by SIGKILL by the OOM killer \(cgroup oom_kill (\d+) -> (\d+)\)$",
            died[0].how) and died[0].request == "GET /hog", "death records: %r" % died)
        c.check(re.search(r"terminated due to signal 9|was sent SIGKILL", s.output()),
                "gunicorn's line about the kill")
    finally:
        c.close()
        c.servers = []
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.1)


def case_quiet(c):
    """Nothing in flight: an idle worker killed, a graceful shutdown, a
    fast request finished: nothing is written at all."""
    s = c.gunicorn(timeout=30, threshold="2s", workers=2)
    for _ in range(5):
        harness.get(s.port, "/sleep?s=0.01")
    # A request ends at the worker's next step after its response (its
    # close, here): give it that moment before the kill (slowdog(7) LIMITS).
    time.sleep(0.5)
    for p in worker_pids(s)[:1]:
        os.kill(p, signal.SIGKILL)
    time.sleep(1.5)
    # A graceful shutdown while a request under the threshold runs: it
    # finishes, answered, and nothing is said.
    box = fire(s.port, "/sleep?s=1")
    time.sleep(0.3)
    s.stop()
    box["thread"].join(5)
    c.check(box.get("body") == b"ok\n", "the draining request: %r" % box)
    c.check(s.returncode == 0, "gunicorn exited with %r" % s.returncode)
    text = harness.read_log(c.log)
    c.check(text == "", "the log is not empty: %r" % text[:500])


def case_off(c):
    """SLOWDOG_LAST_WORDS=0: no handlers in front of the application's, no
    last words; the master still says how the worker died."""
    s = c.gunicorn(SLOWDOG_LAST_WORDS="0")
    fire(s.port, "/pbkdf")
    c.check(c.wait_died(1, 15), "no death record")
    reports, finished, died = c.parsed()
    c.check(not any("Last-Words" in r.fields for r in reports), "last words while off")
    c.check(len(died) == 1, "death records: %r" % died)


def case_signals_unchanged(c):
    """The application sees its own signal handlers, and faulthandler's
    state, exactly as without the library."""
    outs = []
    for preload in (False, True):
        s = c.gunicorn(timeout=30, preload=preload, LW_FAULTHANDLER="1")
        outs.append(harness.get(s.port, "/signals").decode().strip())
        s.stop()
    c.check(outs[0] == outs[1], "getsignal differs:\n  without %s\n  with    %s" % tuple(outs))
    c.check("SIGTERM=Worker.handle_exit" in outs[1], "unexpected handlers: %s" % outs[1])


CASES = [case_gunicorn_timeout_sleep, case_gunicorn_timeout_c_code, case_gunicorn_regex,
         case_crash, case_crash_faulthandler, case_threshold_under_timeout,
         case_uwsgi_harakiri, case_kill9_outside, case_gthread_shutdown, case_json, case_uvicorn_worker, case_oom,
         case_quiet, case_off,
         case_signals_unchanged]


def main():
    only = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-k"]
    todo = [f for f in CASES if not only or any(k in f.__name__ for k in only)]
    results = {}
    lock = threading.Semaphore(3)

    def run(fn):
        with lock:
            name = fn.__name__[len("case_"):]
            c = Case(name)
            t0 = time.monotonic()
            try:
                fn(c)
            except Exception as e:
                c.problems.append("raised %r" % e)
            finally:
                c.close()
            results[name] = (c, time.monotonic() - t0)
    for t in harness.start_threads(run, todo):
        t.join()
    failed = 0
    for fn in todo:
        name = fn.__name__[len("case_"):]
        c, secs = results[name]
        print("%-4s %s (%.1f s)" % ("ok" if not c.problems else "FAIL", name, secs))
        for p in c.problems:
            print("     " + p)
        failed += bool(c.problems)
    print("%d passed, %d failed" % (len(todo) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

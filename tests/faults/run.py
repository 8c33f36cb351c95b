#!/usr/bin/python3
"""Fault tests: bad settings, a signal the application owns, native code
that does not retry after EINTR (sleep, nanosleep, poll, sem_timedwait),
an unwritable, full or rotated log, SLOWDOG_DISABLE, threads that exit
while they are captured, an application that blocks every signal, forks
(os.fork, multiprocessing) and execs, dups its socket or dup2s over it,
runs 1000 threads at once or recurses 10,000 frames deep in C, a worker
killed by gunicorn's timeout or uWSGI's harakiri, a server stopped with
SIGSTOP and resumed.

usage: tests/faults/run.py [BUILD_DIR] [-k FILTER]...
"""
import calendar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
from harness import PY, STDSERVER, slowlog  # noqa: E402
LIB = harness.library()

failures = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", name,
                       "" if cond else ": " + detail))
    if not cond:
        failures.append(name)


class Server(harness.Server):
    """stdserver.py with faultapp, or cmd (PORT in it replaced)."""

    def __init__(self, env, tmp, cmd=None, stop_signal=signal.SIGINT):
        e = harness.env(LIB, os.path.join(tmp, "slow.log"), "500ms", PYTHONPATH=HERE)
        e.update(env)
        harness.Server.__init__(self, cmd or [PY, STDSERVER, "PORT", "faultapp:app"], e,
                                os.path.join(tmp, "stderr"), cwd=HERE,
                                stop_signal=stop_signal, session=True)

    def get(self, path, timeout=20):
        return harness.Server.get(self, path, timeout).decode().strip()

    def parsed(self):
        """(reports, finished, errors) of the log. Not errors here: a label
        as the request line, and no stack section under a failed capture
        (slowlog.py wants one; the library writes none)."""
        r, f, e = slowlog.parse(self.logtext())
        failed = set(x.lineno for x in r if x.capture.startswith("failed"))
        return r, f, [x for x in e if "bad Request" not in x and not (
            "no native stack section" in x and
            int(re.search(r"report at line (\d+)", x).group(1)) in failed)]


def reports(text):
    return re.findall(r"--- slowdog: slow request ---\n(.*?)--- end of",
                      text, re.S)


def test_bad_settings():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_THRESHOLD": "soon", "SLOWDOG_MAX_FRAMES": "-3",
                    "SLOWDOG_STACK": "sideways", "SLOWDOG_SIGNAL": "SIGFOO",
                    "SLOWDOG_THRESHOLD": "12parsecs"}, tmp)
        try:
            body = s.get("/spin")
        finally:
            err = s.stop()
        check("bad settings: server answers", body == "ok", body)
        lines = [l for l in err.splitlines() if l.startswith("slowdog:")]
        for var in ("SLOWDOG_THRESHOLD", "SLOWDOG_MAX_FRAMES", "SLOWDOG_STACK",
                    "SLOWDOG_SIGNAL"):
            mine = [l for l in lines if l.startswith("slowdog: " + var + "=")]
            check("bad settings: one line for " + var, len(mine) == 1,
                  repr(lines))
            check("bad settings: line says what is used for " + var,
                  bool(mine) and "using" in mine[0], repr(mine))
        # The default threshold (10 s) is used: a 1.5 s request is not slow.
        check("bad settings: default threshold used",
              reports(s.logtext()) == [], s.logtext()[:500])


def test_signal_owned():
    # The application already handles SIGRTMIN+3 (slowdog's first choice)
    # before serving: slowdog takes the next one and says so.
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "sitecustomize.py")
        with open(pre, "w") as f:
            f.write("import signal\nsignal.signal(signal.SIGRTMIN + 3, "
                    "lambda *a: None)\n")
        s = Server({"PYTHONPATH": tmp + ":" + HERE, "SLOWDOG_SIGNAL": "auto"},
                   tmp)
        try:
            body = s.get("/spin")
            got = s.wait_log(r"Capture:    signal")
        finally:
            err = s.stop()
        check("signal owned: server answers", body == "ok", body)
        check("signal owned: running thread still captured", got,
              s.logtext()[:800])
        check("signal owned: no line about a lost signal",
              "installed its own handler" not in err, err)


def test_signal_taken_later():
    sigrtmin = 34  # glibc
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_SIGNAL": "SIGRTMIN+5",
                    "FAULT_SIGNAL": str(sigrtmin + 5)}, tmp)
        try:
            s.get("/spin")  # slowdog installs its handler at the first request
            taken = s.get("/take")
            body = s.get("/spin")
        finally:
            err = s.stop()
        check("signal taken later: server answers", taken.startswith("taken")
              and body == "ok", taken + body)
        lines = [l for l in err.splitlines() if "installed its own handler" in l]
        check("signal taken later: said once", len(lines) == 1, err)
        rs = reports(s.logtext())
        # Without its signal slowdog cannot stop a running thread; it may
        # still catch it in a wait (a spinning thread lets the GIL go every
        # 5 ms), through the blocked or syscall path.
        check("signal taken later: second spin reported, not through the signal",
              len(rs) == 2 and "Capture:    signal" not in rs[1] and
              re.search(r"^Capture:    (failed|blocked|asleep in )", rs[1], re.M),
              s.logtext()[-600:])


def test_no_eintr():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        results = {}
        paths = ["/sleep/direct", "/sleep/global", "/nanosleep/direct",
                 "/nanosleep/global", "/poll/direct", "/poll/global",
                 "/sem/direct", "/sem/global"]

        def fetch(p):
            try:
                results[p] = s.get(p)
            except Exception as e:
                results[p] = repr(e)
        try:
            ts = [threading.Thread(target=fetch, args=(p,)) for p in paths]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        finally:
            s.stop()
        rs = reports(s.logtext())
        check("no EINTR: every wait was captured", len(rs) == len(paths),
              "%d reports" % len(rs))
        for p in paths:
            r = results.get(p, "")
            # 2 s, not less; more only as much as a busy machine makes it
            m = re.search(r"elapsed=(\d+\.\d)", r)
            full = m is not None and 2.0 <= float(m.group(1)) < 3.5
            clean = ("=-1" not in r) and ("sleep=0" in r or "nanosleep=0" in r
                                          or "poll=0" in r)
            if p.startswith("/sem/"):  # nobody posts: it must time out
                clean = r.startswith("sem=-1 errno=110 ")
            check("no EINTR, no short wait: " + p, full and clean, r)


def test_unwritable_log():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_LOG": "/nonexistent/dir/slow.log"}, tmp)
        try:
            body = s.get("/spin")
            time.sleep(0.2)
        finally:
            err = s.stop()
        check("unwritable log: server answers", body == "ok", body)
        check("unwritable log: one warning",
              len([l for l in err.splitlines()
                   if l.startswith("slowdog: cannot open SLOWDOG_LOG")]) == 1,
              err[:500])
        check("unwritable log: report on stderr instead",
              "--- slowdog: slow request ---" in err, err[:500])


def test_disabled():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_DISABLE": "1"}, tmp)
        try:
            body = s.get("/spin")
        finally:
            err = s.stop()
        check("disabled: server answers", body == "ok", body)
        check("disabled: nothing logged", not os.path.exists(s.log), "log exists")
        check("disabled: nothing said", "slowdog" not in err, err)


def slowdog_lines(err):
    return [l for l in err.splitlines() if l.startswith("slowdog:")]


def get_all(s, paths, timeout=30):
    """GETs every path at once; path -> body (or the exception's repr)."""
    return dict(zip(paths, harness.at_once(lambda p: s.get(p, timeout), paths)))


def by_request(reports):
    d = {}
    for r in reports:
        d.setdefault(r.request, []).append(r)
    return d


def test_log_full():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_LOG": "/dev/full"}, tmp)
        try:
            bodies = [s.get("/spin?s=0.8&n=%d" % i) for i in range(3)]
            time.sleep(0.3)
            alive = s.p.poll() is None
        finally:
            err = s.stop()
        check("log full: server answers", bodies == ["ok"] * 3 and alive, repr(bodies))
        lines = slowdog_lines(err)
        full = [l for l in lines if l.startswith("slowdog: the log is full")]
        check("log full: one line says so", len(full) == 1 and len(lines) == 1,
              repr(lines))
        check("log full: reports dropped, not sent to stderr",
              "--- slowdog" not in err and "finished after" not in err, err[:500])


def test_log_rotated():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        old = s.log + ".1"
        try:
            s.get("/spin?s=0.8&n=1")
            got1 = s.wait_log(r"finished after .*n=1\n")
            os.rename(s.log, old)
            s.get("/spin?s=0.8&n=2")
            got2 = s.wait_log(r"finished after .*n=2\n")
            mode = os.stat(s.log).st_mode & 0o777 if os.path.exists(s.log) else None
            os.unlink(s.log)
            s.get("/spin?s=0.8&n=3")
            got3 = s.wait_log(r"finished after .*n=3\n")
        finally:
            s.stop()
        with open(old) as f:
            r_old, f_old, e_old = slowlog.parse(f.read())
        r_new, f_new, e_new = s.parsed()
        check("log rotated: first report stays in the renamed file",
              got1 and [r.request for r in r_old] == ["GET /spin?s=0.8&n=1"]
              and len(f_old) == 1 and not e_old, repr((r_old, f_old, e_old)))
        check("log rotated: next report in a new file at the path", got2, "")
        check("log rotated: the new file is mode 0600", mode == 0o600, oct(mode or 0))
        check("log removed: next report in a new file again",
              got3 and [r.request for r in r_new] == ["GET /spin?s=0.8&n=3"]
              and len(f_new) == 1 and not e_new, repr((r_new, f_new, e_new)))


def test_thread_exit():
    # Threads that begin work, run about the threshold (sleeping, running,
    # or waiting on a lock) and exit without slowdog_end(): many die
    # between the watchdog's choice and its capture. A report may or may
    # not come; one that comes must show that thread and its own stack.
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"FAULT_THRESHOLD": "0.5"}, tmp)
        try:
            tids = json.loads(s.get("/doomed?n=60"))
            body = s.get("/spin?s=0.8&after=doomed")
            alive = s.p.poll() is None
            s.wait_log(r"Request:    GET /spin.*after=doomed", 2)
        finally:
            err = s.stop()
        reports, _, errors = s.parsed()
        check("thread exit: server alive and answering", alive and body == "ok", body)
        check("thread exit: log well formed", not errors, repr(errors[:3]))
        doomed = [r for r in reports if (r.request or "").startswith("doomed ")]
        wrong = []
        failed = []
        ending = 0
        for r in doomed:
            funcs = [f.func for f in r.py_frames]
            files = set(os.path.basename(f.file) for f in r.py_frames)
            # Its own frames; or, caught as it ends (the work is over but
            # the thread has not yet given its record back), only
            # threading's, or none at all.
            own = "doomed_work" in funcs
            if r.capture.startswith("failed"):
                failed.append(r.capture)
            elif not own and files <= {"threading.py"}:
                ending += 1
            elif r.tid != tids.get(r.request) or not own:
                wrong.append("%s: thread %s (its own %s), frames %s %s, native %s"
                             % (r.request, r.tid, tids.get(r.request), funcs[-3:],
                                r.py_note, [f.name for f in r.native[:6]]))
            if r.tid != tids.get(r.request) and not wrong:
                wrong.append("%s: thread %s, its own %s" % (r.request, r.tid,
                                                            tids.get(r.request)))
        check("thread exit: every report shows its own thread (%d of %d "
              "threads reported, %d as they ended)" % (len(doomed), len(tids), ending),
              not wrong, "; ".join(wrong[:3]))
        if failed:
            print("note thread exit: %d captures failed: %s" % (len(failed),
                                                               sorted(set(failed))))
        check("thread exit: later requests still reported",
              "GET /spin?s=0.8&after=doomed" in [r.request for r in reports], "")
        check("thread exit: nothing on stderr", not slowdog_lines(err), err[:300])


def test_sigmask_all():
    # The view blocks every signal (SIG_BLOCK, or SIG_SETMASK with a full
    # set) and runs: slowdog keeps its own signal unblocked.
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        try:
            # One at a time, so that the thread runs (holds the GIL) and
            # only the signal can capture it; once more if the capture
            # still found it waiting for the GIL.
            results = {}
            for how in ("block", "setmask"):
                for n in range(2):
                    path = "/blockall?how=%s&n=%d" % (how, n)
                    body = s.get(path)
                    s.wait_log(r"finished after .*how=%s&n=%d" % (how, n), 2)
                    rs = by_request(s.parsed()[0]).get("GET " + path, [])
                    results[how] = (body, [r.capture for r in rs])
                    if len(rs) != 1 or not rs[0].capture.startswith("asleep"):
                        break
        finally:
            s.stop()
        for how in ("block", "setmask"):
            body, caps = results.get(how, ("", []))
            check("signals blocked (%s): captured with the signal" % how,
                  body == "ok" and len(caps) == 1 and caps[0].startswith("signal"),
                  repr((body, caps)))
    # The main thread blocks everything before it serves: every connection
    # thread starts with all signals blocked.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as f:
            f.write("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, "
                    "signal.valid_signals())\n")
        s = Server({"PYTHONPATH": tmp + ":" + HERE}, tmp, stop_signal=signal.SIGKILL)
        try:
            for n in range(2):
                path = "/spin?s=0.8&n=%d" % n
                body = s.get(path)
                s.wait_log(r"finished after .*n=%d" % n, 2)
                caps = [r.capture for r in by_request(s.parsed()[0]).get("GET " + path, [])]
                if len(caps) != 1 or not caps[0].startswith("asleep"):
                    break
        finally:
            s.stop()
        check("signals blocked from the start: captured with the signal",
              body == "ok" and len(caps) == 1 and caps[0].startswith("signal"),
              repr(caps))


def test_fork_exec():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        paths = ["/fork?exit=os", "/fork?exit=libc", "/mp", "/exec"]
        try:
            bodies = {}
            for p in paths:
                bodies[p] = s.get(p)
                # Let the finished line out before the next connection's
                # thread takes the slot (see test_finished_lines).
                time.sleep(0.2)
            bodies["/spin?s=0.8&after=fork"] = s.get("/spin?s=0.8&after=fork")
            s.wait_log(r"finished after .*after=fork", 3)
            time.sleep(0.6)  # anything a child might still write
            alive = s.p.poll() is None
        finally:
            err = s.stop()
        reports, finished, errors = s.parsed()
        check("fork/exec: server alive, children ran", alive and all(
            re.match(r"child \d+ (status|exit) 0", bodies[p]) for p in paths),
            repr(bodies))
        check("fork/exec: log well formed", not errors, repr(errors[:3]))
        others = [r for r in reports if r.pid != s.p.pid]
        check("fork/exec: no report from a child", not others,
              repr([(r.pid, r.request) for r in others]))
        reps = by_request(reports)
        for p in paths + ["/spin?s=0.8&after=fork"]:
            check("fork/exec: parent reported once for " + p,
                  len(reps.get("GET " + p, [])) == 1, repr(sorted(reps)))
        done = set(f.request_id for f in finished)
        check("fork/exec: a finished line for each",
              all(r.request_id in done for r in reports),
              "none for " + ", ".join(r.request for r in reports
                                      if r.request_id not in done))
        check("fork/exec: nothing on stderr", not slowdog_lines(err), err[:300])


def test_finished_lines():
    # stdserver runs each connection on a new thread: one that ends a
    # reported request and exits leaves its slot to the next connection's
    # thread at once. Slow requests back to back on new connections: each
    # report must still get its finished line.
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_THRESHOLD": "100ms"}, tmp)
        try:
            # 0.25 s against a 100 ms threshold: slow by a margin that a
            # busy machine cannot eat
            for i in range(30):
                s.get("/sleep?s=0.25&n=%d" % i)
            s.wait_log(r"finished after .*n=29\n", 2)
            time.sleep(0.5)
        finally:
            s.stop()
        reports, finished, errors = s.parsed()
        done = set(f.request_id for f in finished)
        lost = [r.request for r in reports if r.request_id not in done]
        check("finished lines of threads that exit: %d reports, none lost"
              % len(reports), len(reports) == 30 and not lost and not errors,
              "no finished line for %d: %s" % (len(lost), ", ".join(lost[:5])))


def gunicorn_cmd(*args):
    return ["/usr/bin/gunicorn", "--chdir", HERE, "-b", "127.0.0.1:PORT",
            "--log-level", "warning"] + list(args) + ["faultapp:app"]


def have_gunicorn(what):
    """Whether gunicorn is installed; a failed check named after what if not."""
    if os.path.exists("/usr/bin/gunicorn"):
        return True
    check("%s: gunicorn installed" % what, False, "no /usr/bin/gunicorn")
    return False


def test_dup_fd():
    if not have_gunicorn("dup"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp, gunicorn_cmd("-w", "1", "-k", "gthread", "--threads", "2"),
                   signal.SIGTERM)
        try:
            b1 = s.get("/dupclose")
            b2 = s.get("/dup2")
            b3 = s.get("/spin?s=0.8&after=dup")
            s.wait_log(r"finished after .*after=dup", 3)
        finally:
            err = s.stop()
        reports, finished, errors = s.parsed()
        reps = by_request(reports)
        fins = {f.request for f in finished}
        check("dup: answers intact", [b1, b2, b3] == ["ok"] * 3, repr([b1, b2, b3]))
        check("dup: log well formed", not errors, repr(errors[:3]))
        check("dup: closing a dup of the socket does not end the request",
              len(reps.get("GET /dupclose", [])) == 1 and "GET /dupclose" in fins,
              repr(sorted(reps)))
        check("dup2 over the socket and back: at most one report",
              len(reps.get("GET /dup2", [])) <= 1, repr(sorted(reps)))
        check("dup: later requests reported",
              len(reps.get("GET /spin?s=0.8&after=dup", [])) == 1, repr(sorted(reps)))
        check("dup: nothing on stderr", not slowdog_lines(err), err[:300])


def test_work_after_response():
    # gunicorn's sync worker calls the response's close() after its last
    # byte, then closes the socket. Time spent there is the worker's, on
    # this request: reported, with close() on the stack; the finished line
    # still counts to the last byte.
    if not have_gunicorn("after the response"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_THRESHOLD": "200ms"}, tmp,
                   gunicorn_cmd("-w", "1", "-k", "sync"), signal.SIGTERM)
        try:
            body = s.get("/afterward?s=0.8")
            quick = s.get("/sleep?s=0")
            s.wait_log(r"finished after .*afterward", 5)
        finally:
            err = s.stop()
        reports, finished, errors = s.parsed()
        reps = by_request(reports).get("GET /afterward?s=0.8", [])
        fins = [f for f in finished if f.request == "GET /afterward?s=0.8"]
        check("after the response: answers intact", [body, quick] == ["ok", "ok"],
              repr([body, quick]))
        check("after the response: log well formed", not errors, repr(errors[:3]))
        check("after the response: one report, close() on its stack",
              len(reps) == 1 and any(f.func == "afterward_close"
                                     for f in reps[0].py_frames),
              repr([[f.func for f in r.py_frames] for r in reps]))
        check("after the response: its finished line counts to the last byte",
              len(reps) == 1 and len(fins) == 1 and reps[0].running is not None
              and fins[0].seconds < reps[0].running,
              repr([[r.running for r in reps], fins]))
        check("after the response: nothing else reported",
              sorted(by_request(reports)) == ["GET /afterward?s=0.8"],
              repr(sorted(by_request(reports))))
        check("after the response: nothing on stderr", not slowdog_lines(err), err[:300])


def test_1000_threads():
    script = os.path.join(HERE, "threads.py")
    with tempfile.TemporaryDirectory() as tmp:
        logp = os.path.join(tmp, "slow.log")
        env = dict(os.environ, LD_PRELOAD=LIB, SLOWDOG_THRESHOLD="200ms",
                   SLOWDOG_LOG=logp)
        r = subprocess.run([PY, script, "1000", "0.5"], env=env, timeout=60,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = r.stdout.decode(errors="replace")
        try:
            with open(logp) as f:
                text = f.read()
        except OSError:
            text = ""
    check("1000 threads: no crash", r.returncode == 0, out[-500:])
    try:
        tids = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        tids = {}
    reports, finished, errors = slowlog.parse(text)
    errors = [e for e in errors if "bad Request" not in e]
    check("1000 threads: log well formed", not errors, repr(errors[:3]))
    labels = [x.request for x in reports]
    wrong = [x.request for x in reports if tids.get(x.request) != x.tid]
    check("1000 threads: no thread reported twice or as another",
          len(set(labels)) == len(labels) and not wrong, repr(wrong[:5]))
    check("1000 threads: every thread reported (%d of %d)" % (len(set(labels)),
                                                              len(tids)),
          len(tids) == 1000 and set(labels) == set(tids), "")
    check("1000 threads: a finished line for each report",
          len(finished) == len(reports), "%d finished" % len(finished))


def build_deep(tmp):
    so = os.path.join(tmp, "deep.so")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O0", "-g", "-o", so,
                        os.path.join(HERE, "deep.c")])
    return so if r.returncode == 0 else None


def test_deep_native():
    with tempfile.TemporaryDirectory() as tmp:
        so = build_deep(tmp)
        if not so:
            check("deep native: deep.c builds", False, "cc failed")
            return
        s = Server({"FAULT_DEEP_SO": so}, tmp)
        try:
            bodies = get_all(s, ["/deepnative?mode=sleep", "/deepnative?mode=spin"])
            s.wait_log(r"finished after .*sleep", 2)
            s.wait_log(r"finished after .*spin", 2)
            alive = s.p.poll() is None
        finally:
            s.stop()
        reports, _, errors = s.parsed()
        check("deep native: no crash, right answers", alive and set(bodies.values())
              == {"deep=10000"}, repr(bodies))
        check("deep native: log well formed", not errors, repr(errors[:3]))
        reps = by_request(reports)
        for mode, how in (("sleep", "blocked"), ("spin", "signal")):
            rs = reps.get("GET /deepnative?mode=" + mode, [])
            ok = len(rs) == 1
            why = "%d reports" % len(rs)
            if ok:
                r = rs[0]
                deep = sum(1 for f in r.native if f.name == "deep")
                ok = (r.capture.startswith(how) and len(r.native) == 256 and
                      deep >= 250 and any("more frames not shown: 256" in x
                                          for x in r.native_extra))
                why = "capture %r, %d frames (%d deep), extra %r" % (
                    r.capture, len(r.native), deep, r.native_extra)
            check("deep native (%s): 256 frames shown, the cut said" % mode, ok, why)


def test_longjmp_out_of_call():
    """A signal handler longjmps out of an interposed read(2) (C code with
    timeouts by signal): the read never returns. The thread's later calls
    must still be recorded: the report of its next slow request shows
    where it waits now, not the read it left."""
    with tempfile.TemporaryDirectory() as tmp:
        so = build_deep(tmp)
        if not so:
            check("longjmp: deep.c builds", False, "cc failed")
            return
        s = Server({"FAULT_DEEP_SO": so}, tmp)
        try:
            # one at a time: the C side has one signal handler and one
            # jump buffer for the process
            bodies = {p: s.get(p) for p in ("/longjmp?s=1.5", "/longjmp?s=1.6")}
            s.wait_log(r"finished after .*/longjmp\?s=1.6", 3)
            alive = s.p.poll() is None
        finally:
            err = s.stop()
        reports, _, errors = s.parsed()
        check("longjmp: no crash, right answers", alive and sorted(bodies.values())
              == ["jumped=1", "jumped=1"], repr(bodies))
        check("longjmp: log well formed", not errors, repr(errors[:3]))
        check("longjmp: nothing on stderr", not slowdog_lines(err), err[-300:])
        reps = by_request(reports)
        for p in ("/longjmp?s=1.5", "/longjmp?s=1.6"):
            rs = reps.get("GET " + p, [])
            ok = len(rs) == 1
            why = "%d reports" % len(rs)
            if ok:
                r = rs[0]
                names = [f.name for f in r.native]
                ok = (r.capture.startswith("blocked") and
                      r.blocked_in in ("clock_nanosleep", "nanosleep", "select") and
                      "left_by_longjmp" not in names)
                why = "capture %r, native %r" % (r.capture, names[:8])
            check("longjmp %s: reported where it waits now" % p, ok, why)


def test_gunicorn_timeout():
    if not have_gunicorn("gunicorn timeout"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp, gunicorn_cmd("-w", "1", "-k", "sync", "--timeout", "2"),
                   signal.SIGTERM)
        try:
            t0 = time.monotonic()
            try:
                body = s.get("/sleep?s=5", 15)
            except Exception as e:
                body = repr(e)
            took = time.monotonic() - t0
            after = s.get("/spin?s=0.8&after=timeout")
            s.wait_log(r"finished after .*after=timeout", 3)
        finally:
            s.stop()
        reports, finished, errors = s.parsed()
        reps = by_request(reports)
        killed = reps.get("GET /sleep?s=5", [])
        later = reps.get("GET /spin?s=0.8&after=timeout", [])
        check("gunicorn timeout: the worker was killed mid-request",
              body != "ok" and took < 4.9, "%r after %.1f s" % (body, took))
        check("gunicorn timeout: log well formed", not errors, repr(errors[:3]))
        # gunicorn's timeout is SIGABRT, which the worker handles: it exits
        # through Python and closes the connection, so a finished line may
        # come, with the time to the kill (not the 5 s the view asked for).
        # Reported at the threshold, then again with its last words when
        # gunicorn's SIGABRT came.
        fins = [f for f in finished if "s=5" in f.request]
        check("gunicorn timeout: reported before the kill, finished (if at all) "
              "at the kill", len(killed) == 2 and "Last-Words" not in killed[0].fields and
              killed[1].fields.get("Last-Words", "").startswith("SIGABRT from pid %d "
                                                                 "(the parent)" % s.p.pid) and
              len(fins) <= 1 and
              all(1.9 <= f.seconds <= took + 0.2 for f in fins),
              repr(killed) + repr(fins))
        check("gunicorn timeout: the new worker reports", after == "ok" and
              len(later) == 1 and killed and later[0].pid != killed[0].pid,
              repr(later))


def test_uwsgi_harakiri():
    uwsgi = shutil.which("uwsgi")
    if not uwsgi or not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"):
        check("harakiri: uwsgi installed", False, "no uwsgi or its python3 plugin")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [uwsgi, "--plugin", "python3", "--http-socket", "127.0.0.1:PORT",
               "--master", "--processes", "1", "--harakiri", "2",
               "--wsgi-file", os.path.join(HERE, "faultapp.py"), "--callable", "app",
               "--need-app", "--disable-logging"]
        s = Server({}, tmp, cmd, signal.SIGINT)
        try:
            t0 = time.monotonic()
            try:
                body = s.get("/sleep?s=5", 15)
            except Exception as e:
                body = repr(e)
            took = time.monotonic() - t0
            after = s.get("/spin?s=0.8&after=harakiri")
            s.wait_log(r"finished after .*after=harakiri", 3)
        finally:
            err = s.stop()
        reports, finished, errors = s.parsed()
        reps = by_request(reports)
        killed = reps.get("GET /sleep?s=5", [])
        later = reps.get("GET /spin?s=0.8&after=harakiri", [])
        check("harakiri: the worker was killed mid-request",
              body != "ok" and took < 4.9 and "HARAKIRI" in err,
              "%r after %.1f s" % (body, took))
        check("harakiri: log well formed", not errors, repr(errors[:3]))
        # Reported at the threshold, then with its last words when the
        # master said SIGKILL was coming; the master's record of its death.
        died = slowlog.parse_all(s.logtext())[2]
        check("harakiri: reported before the kill, no finished line",
              len(killed) == 2 and "Last-Words" not in killed[0].fields and
              killed[1].fields.get("Last-Words", "").startswith("SIGKILL coming from pid") and
              not [f for f in finished if "s=5" in f.request],
              repr(killed))
        check("harakiri: the master's record of the death",
              [d.how for d in died] == ["killed by SIGKILL from the parent"] and
              died[0].request == "GET /sleep?s=5", repr(died))
        check("harakiri: the new worker reports", after == "ok" and
              len(later) == 1 and killed and later[0].pid != killed[0].pid,
              "%r %r; log: %r; stderr: %s" % (after, later, s.logtext()[-1500:],
                                             err[-1500:]))


def test_sigstop():
    # The whole server stops 0.3 s into two requests (one asleep in
    # nanosleep, one running) for 2 s: the threshold passes while it is
    # stopped. Nothing may be written before SIGCONT; after it, both
    # are reported with stacks and answered intact.
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        out = {}
        try:
            th = threading.Thread(target=lambda: out.update(
                get_all(s, ["/csleep?s=3", "/spin?s=3"])))
            th.start()
            time.sleep(0.3)
            os.kill(s.p.pid, signal.SIGSTOP)
            time.sleep(2.0)
            before = s.logtext()
            resumed = time.time()
            os.kill(s.p.pid, signal.SIGCONT)
            th.join(20)
            s.wait_log(r"finished after .*csleep", 2)
            s.wait_log(r"finished after .*spin", 2)
            alive = s.p.poll() is None
        finally:
            s.stop()
        reports, _, errors = s.parsed()
        check("SIGSTOP: answers intact", alive and out.get("/csleep?s=3") ==
              "nanosleep=0 errno=0 elapsed_ok=True" and out.get("/spin?s=3") == "ok",
              repr(out))
        check("SIGSTOP: nothing written while stopped", before == "", before[:300])
        check("SIGSTOP: log well formed", not errors, repr(errors[:3]))
        reps = by_request(reports)
        # The spinning thread is caught running (signal), or, when the
        # resumed server's other threads took the GIL first, waiting for
        # it in futex for the moment the watchdog looked: in spin either way.
        for p, how, func in (("/csleep?s=3", ("blocked",), None),
                             ("/spin?s=3", ("signal", "asleep in futex()"), "spin")):
            rs = reps.get("GET " + p, [])
            ok = len(rs) == 1 and rs[0].capture.startswith(how) and \
                (func is None or func in [f.func for f in rs[0].py_frames])
            if ok:
                t = rs[0].fields["Time"]
                when = calendar.timegm(time.strptime(t[:19], "%Y-%m-%d %H:%M:%S")) \
                    + float(t[19:23])
                ok = when >= resumed - 0.05
            check("SIGSTOP: %s reported after the resume, with a stack" % p, ok,
                  repr([(r.capture, r.fields.get("Time"),
                         [f.func for f in r.py_frames]) for r in rs]))


def test_wait_loops():
    # Hundreds of captures (SLOWDOG_REPEAT every 10 ms) of threads that
    # alternate short bursts of Python with 2 ms waits: some captures hit
    # a thread just as it enters its wait. No wait may fail or end early:
    # the interposed ones (nanosleep, poll through the process's symbols)
    # and sem_timedwait, which slowdog does not interpose.
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({"SLOWDOG_THRESHOLD": "50ms", "SLOWDOG_REPEAT": "10ms",
                    "SLOWDOG_REPEAT_MAX": "1000"}, tmp)
        # Through libc's own handle (ctypes.CDLL("libc.so.6")) the calls
        # bypass slowdog: sem_timedwait (an absolute deadline) and select
        # (the kernel writes back the time left) are resumed by the signal
        # handler and checked; a relative sleep or poll entered in the
        # microseconds between the watchdog's last look and the signal can
        # still see EINTR, the documented limit: shown, not checked.
        paths = ["/loop/nanosleep/global?s=2", "/loop/poll/global?s=2",
                 "/loop/sem/global?s=2", "/loop/sem/global?s=2&n=2",
                 "/loop/sem/direct?s=2", "/loop/usleep/global?s=2",
                 "/loop/select/global?s=2", "/loop/select/direct?s=2",
                 "/loop/nanosleep/direct?s=2", "/loop/poll/direct?s=2"]
        try:
            bodies = get_all(s, paths)
            time.sleep(0.3)
        finally:
            s.stop()
        text = s.logtext()
        ncap = text.count("--- slowdog: slow request ---")
        for p in paths:
            b = bodies.get(p, "")
            if "/direct" in p and "/sem/" not in p and "/select/" not in p:
                print("note wait loop %s (a documented limit): %s" % (p, b))
                continue
            check("wait loop %s: no EINTR, no short wait (%d captures in all)"
                  % (p, ncap), re.match(r"waits=\d+ bad=0$", b) is not None, b)


TESTS = (test_bad_settings, test_signal_owned, test_signal_taken_later,
         test_no_eintr, test_unwritable_log, test_disabled, test_log_full,
         test_log_rotated, test_thread_exit, test_finished_lines,
         test_sigmask_all, test_fork_exec,
         test_dup_fd, test_work_after_response, test_1000_threads, test_deep_native, test_longjmp_out_of_call,
         test_gunicorn_timeout,
         test_uwsgi_harakiri, test_sigstop, test_wait_loops)

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
sys.exit(1 if failures else 0)

#!/usr/bin/python3
"""Fault tests: bad settings, a signal the application owns, native code
that does not retry after EINTR, an unwritable log, SLOWDOG_DISABLE.

usage: tests/faults/run.py [BUILD_DIR]
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
LIB = os.path.join(BUILD, "libslowdog.so")
SERVER = os.path.join(ROOT, "tests", "integration", "stdserver.py")
PY = "/usr/bin/python3"
failures = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", name,
                       "" if cond else ": " + detail))
    if not cond:
        failures.append(name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, env, tmp):
        self.port = free_port()
        self.log = os.path.join(tmp, "slow.log")
        self.err = open(os.path.join(tmp, "stderr"), "w+")
        e = dict(os.environ, LD_PRELOAD=LIB, SLOWDOG_THRESHOLD="500ms",
                 SLOWDOG_LOG=self.log, PYTHONPATH=HERE)
        e.update(env)
        self.p = subprocess.Popen([PY, SERVER, str(self.port), "faultapp:app"],
                                  env=e, stderr=self.err,
                                  stdout=subprocess.DEVNULL, cwd=HERE)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def get(self, path, timeout=20):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=timeout) as r:
            return r.read().decode().strip()

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.seek(0)
        return self.err.read()

    def logtext(self):
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if re.search(pattern, self.logtext()):
                return True
            time.sleep(0.02)
        return False


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
        check("signal taken later: second spin reported without a stack",
              len(rs) == 2 and "Capture:    failed" in rs[1], s.logtext()[-600:])


def test_no_eintr():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server({}, tmp)
        results = {}
        paths = ["/sleep/direct", "/sleep/global", "/nanosleep/direct",
                 "/nanosleep/global", "/poll/direct", "/poll/global"]

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
            full = re.search(r"elapsed=2\.[0-2]", r) is not None
            clean = ("=-1" not in r) and ("sleep=0" in r or "nanosleep=0" in r
                                          or "poll=0" in r)
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


for t in (test_bad_settings, test_signal_owned, test_signal_taken_later,
          test_no_eintr, test_unwritable_log, test_disabled):
    try:
        t()
    except Exception as e:  # a broken test is a failure, not a crash
        check(t.__name__, False, repr(e))
print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)

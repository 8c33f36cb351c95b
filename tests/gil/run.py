#!/usr/bin/python3
"""Who holds the GIL: end-to-end, on every CPython on the machine.

Usage: /usr/bin/python3 tests/gil/run.py BUILD_DIR [-k WORD]... [-v]

A threaded server (the standard library's, tests/pyframes/wsgiserver.py,
on pyenv's 3.8-3.13, Debian's /usr/bin/python3 and Debian unstable's 3.14
and 3.15; gunicorn's gthread worker on Debian's python3) runs gilapp.py
with the library preloaded:

  * /hold holds the GIL for HOLD seconds in one C call while /wait runs
    Python code: the report of /wait, due at the threshold, must say that
    it waits for the GIL and name the thread of /hold (the tid of /hold's
    own report), its request line and request id, its running time, and
    its innermost Python frames (hold_gil < view_hold, at their lines);
    /hold's own report must say nothing of the GIL;
  * /bg: a background thread holds the GIL while the request runs Python
    code: the holder is that thread (not the request's, not the main
    one), serving no request, in hold_gil < background; from 3.14, which
    names threads for the system, its name is the Python thread's;
  * /main (stdlib server): the main thread holds it, in a signal handler:
    "the main thread, serving no request", in hold_gil < on_signal;
  * /churn, three at once: each with four threads, all running Python
    code, so that the GIL changes hands every switch interval: a holder
    named must be the right one (its innermost frame is the function only
    that thread runs, a request's thread is that request's); "unknown" is
    allowed (text runs only).

uWSGI (--threads, Debian's python3 plugin) runs it too.
Debian's interpreter is stripped: it runs with its debug symbols and
without them (a mount namespace hides /usr/lib/debug; take_gil then has no
name in the native stack, which the test checks), once in JSON lines.
One line per check; exit status 1 when one fails.
"""

import argparse
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
import slowlog  # noqa: E402

APP = os.path.join(HERE, "gilapp.py")
SERVER = os.path.join(os.path.dirname(HERE), "pyframes", "wsgiserver.py")
TOP = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "slowdog-top")
THRESHOLD = 0.5
HOLD = 2.5          # seconds the GIL is held: the report of /wait is due
                    # at THRESHOLD, well inside
DUE = 30.0          # responses, finished lines: generous deadlines
CLOCK = time.monotonic


def markers():
    marks = {}
    with open(APP) as f:
        for i, line in enumerate(f, 1):
            m = re.search(r"# LINE:(\w+)", line)
            if m:
                marks[m.group(1)] = i
    return marks


MARK = markers()


def frame_text(func, mark):
    return "%s (%s:%d)" % (func, APP, MARK[mark])


class Job(object):
    def __init__(self, name, python, flavour, ver, nodebug=False, json_=False):
        self.name, self.python, self.flavour, self.ver = name, python, flavour, ver
        self.nodebug, self.json = nodebug, json_
        self.results = []
        self.log = ""

    def check(self, ok, what, detail=""):
        self.results.append((bool(ok), what, detail))

    def command(self):
        if self.flavour == "gunicorn":
            argv = ["/usr/bin/gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
                    "-b", "127.0.0.1:PORT", "--timeout", "60", "gilapp:app"]
        elif self.flavour == "uwsgi":
            argv = ["uwsgi", "--plugin", "python3", "--http-socket", "127.0.0.1:PORT",
                    "--wsgi-file", APP, "--callable", "app", "--threads", "8",
                    "--need-app", "--disable-logging"]
        else:
            argv = [self.python, SERVER, "PORT", "gilapp:app"]
        if self.nodebug:
            # Debian's debug symbols out of sight, for this server only.
            argv = ["unshare", "-m", "sh", "-c",
                    'mount -t tmpfs tmpfs /usr/lib/debug && exec "$@"', "sh"] + argv
        return argv

    def request(self, port, path, out):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=DUE) as s:
                s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                           % path).encode())
                data = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
            out[path] = data
        except OSError as e:
            out[path] = repr(e).encode()

    def run(self, lib, tmp):
        log = os.path.join(tmp, "slowdog.log")
        extra = {"PYTHONPATH": HERE}
        if self.json:
            extra["SLOWDOG_FORMAT"] = "json"
        env = harness.env(lib, log, THRESHOLD, **extra)
        sig = __import__("signal").SIGTERM if self.flavour == "gunicorn" else \
            __import__("signal").SIGINT
        srv = harness.Server(self.command(), env, os.path.join(tmp, "server.err"),
                             cwd=HERE, stop_signal=sig, wait=30.0, must_start=False,
                             stdout="null")
        try:
            if not srv.up():
                self.check(False, "server starts", srv.output()[-500:])
                return
            got = {}
            hold = "/hold?s=%g" % HOLD
            ts = [threading.Thread(target=self.request, args=(srv.port, p, got))
                  for p in (hold, "/wait")]
            for t in ts:
                t.start()
                time.sleep(0.05)  # /hold first: any order works, this is the usual
            for t in ts:
                t.join()
            bg = "/bg?s=%g" % HOLD
            self.request(srv.port, bg, got)
            checks = [(hold, b"held"), ("/wait", b"waited"), (bg, b"background held")]
            if self.flavour == "stdlib":
                main = "/main?s=%g" % HOLD
                self.request(srv.port, main, got)
                checks.append((main, b"main held"))
            churns = ["/churn?s=%g&k=%d" % (HOLD, k) for k in range(3)]
            if not self.json:
                ts = [threading.Thread(target=self.request, args=(srv.port, p, got))
                      for p in churns]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                checks += [(p, b"}") for p in churns]
            for p, want in checks:
                self.check(got.get(p, b"").startswith(b"HTTP/1.1 200") and want in got[p],
                           "response to %s" % p, got.get(p, b"")[:200])
            pat = r'"type":"finished"' if self.json else r"finished after"
            harness.wait_for(lambda: len(re.findall(pat, harness.read_log(log))) >= len(checks),
                             DUE)
            text = harness.read_log(log)
            self.log = text
            if self.json:
                self.verify_json(text, srv.p.pid)
            else:
                self.verify_text(text)
                self.verify_churn(text, got, churns)
            self.verify_top(log)
        finally:
            srv.stop()
            err = srv.output()
            bad = [l for l in err.splitlines() if l.startswith("slowdog:") or
                   "Segmentation fault" in l or "Fatal Python error" in l]
            self.check(not bad, "server stderr clean", "; ".join(bad[:3]))

    # ---- text

    def verify_text(self, text):
        reports, _finished, errors = slowlog.parse(text)
        self.check(not errors, "log parses", "; ".join(errors[:3]))
        by = {}
        for r in reports:
            by.setdefault(r.fields.get("Request", "").split("?")[0], r)
        hold, wait, bg = by.get("GET /hold"), by.get("GET /wait"), by.get("GET /bg")
        self.check(hold and wait and bg, "reports of /hold, /wait and /bg",
                   sorted(by))
        if not (hold and wait and bg):
            return
        self.check("GIL" not in hold.fields, "the holder's own report says nothing "
                   "of the GIL", hold.fields.get("GIL", ""))
        g = wait.fields.get("GIL", "")
        m = re.match(r"^waiting, held by GET /hold\?s=[\d.]+ \(request (\d+-\d+), "
                     r"running (\d+\.\d{3}) s\) in thread (\d+) \((.*)\)$", g)
        self.check(m, "/wait: waiting for the GIL held by GET /hold", g)
        if m:
            self.check(m.group(1) == hold.fields["Request-Id"],
                       "/wait: the holder's request id is /hold's",
                       "%s vs %s" % (m.group(1), hold.fields["Request-Id"]))
            self.check(int(m.group(3)) == hold.tid, "/wait: the holder's thread is "
                       "/hold's", "%s vs %s" % (m.group(3), hold.tid))
            self.check(float(m.group(2)) >= THRESHOLD, "/wait: the holder's running "
                       "time", m.group(2))
        h = wait.fields.get("Holder", "")
        want = frame_text("hold_gil", "hold") + " < " + frame_text("view_hold", "view_hold")
        self.check(h.startswith(want), "/wait: the holder's innermost Python frames",
                   h[:300])
        g = bg.fields.get("GIL", "")
        m = re.match(r"^waiting, held by thread (\d+) \((.*)\), serving no request$", g)
        self.check(m and int(m.group(1)) not in (bg.tid, bg.pid),
                   "/bg: held by another thread, serving no request", g)
        if m and self.ver >= (3, 14):
            self.check(m.group(2) == "gil-bg", "/bg: the holder's name", m.group(2))
        h = bg.fields.get("Holder", "")
        want = frame_text("hold_gil", "hold") + " < " + frame_text("background", "background")
        self.check(h.startswith(want), "/bg: the holder's innermost Python frames", h[:300])
        main = by.get("GET /main")
        self.check((main is not None) == (self.flavour == "stdlib"), "report of /main")
        if main:
            g = main.fields.get("GIL", "")
            self.check(g.startswith("waiting, held by thread %d (" % main.pid) and
                       g.endswith("), the main thread, serving no request"),
                       "/main: held by the main thread", g)
            want = frame_text("hold_gil", "hold") + " < " + frame_text("on_signal", "on_signal")
            h = main.fields.get("Holder", "")
            self.check(h.startswith(want), "/main: the holder's innermost Python frames",
                       h[:300])
        if self.python == "/usr/bin/python3":
            named = any((f.name or "").split(".")[0] == "take_gil" for f in wait.native)
            self.check(named != self.nodebug, "native stack %s take_gil (debug symbols %s)"
                       % ("names" if not self.nodebug else "does not name",
                          "hidden" if self.nodebug else "found"),
                       [f.name for f in wait.native[:4]])

    # ---- churn: the GIL changes hands all the time

    def verify_churn(self, text, got, churns):
        """Every holder named is right: a churner with its own function
        innermost, a /churn request's thread in churn_wait, or the main
        thread; "unknown" is allowed, a wrong name is not."""
        reports, _finished, _errors = slowlog.parse(text)
        churners = {}
        for p in churns:
            body = got.get(p, b"").partition(b"\r\n\r\n")[2]
            try:
                churners.update({int(k): v for k, v in json.loads(body).items()})
            except ValueError:
                self.check(False, "churn: the response gives the churners' ids", body[:200])
                return
        mine = [r for r in reports if r.fields.get("Request", "").startswith("GET /churn")]
        req_tid = {r.fields["Request-Id"]: r.tid for r in mine}
        named = unknown = 0
        wrong = []
        for r in mine:
            g = r.fields.get("GIL")
            if g is None:
                continue
            h = r.fields.get("Holder", "")
            inner = h.split(" (", 1)[0]
            m = re.match(r"^waiting, held by GET /churn\S* \(request (\d+-\d+), running "
                         r"[\d.]+ s\) in thread (\d+) \(", g)
            m2 = re.match(r"^waiting, held by thread (\d+) \(.*\), (the main thread, )?"
                          r"serving no request$", g)
            if g.startswith("waiting, held by an unknown thread ("):
                unknown += 1
                continue
            named += 1
            if m and req_tid.get(m.group(1)) == int(m.group(2)) and inner == "churn_wait":
                continue
            if m2 and m2.group(2) and int(m2.group(1)) == r.pid:
                continue
            if m2 and not m2.group(2) and int(m2.group(1)) in churners and \
                    inner == "churn%d" % churners[int(m2.group(1))]:
                continue
            wrong.append("%s / %s" % (g, h[:120]))
        self.check(len(mine) == len(churns) and not wrong,
                   "churn: every holder named is the right thread (%d named, %d unknown, "
                   "%d not waiting)" % (named, unknown, len(mine) - named - unknown),
                   wrong[:3] or len(mine))

    # ---- slowdog-top

    def verify_top(self, log):
        """slowdog-top's frames table: one row per holder, counted from the
        log here by what each GIL line or gil object says."""
        want = {}
        text = harness.read_log(log)
        if self.json:
            for line in text.splitlines():
                o = json.loads(line)
                g = o.get("gil") if o.get("type") == "report" else None
                if g:
                    h = g["holder"] or {}
                    key = ("GET " + h["request"]["target"].split("?")[0] if h.get("request")
                           else "the main thread" if h.get("main_thread")
                           else "a thread serving no request" if h else "an unknown thread")
                    want[key] = want.get(key, 0) + 1
        else:
            for r in slowlog.parse(text)[0]:
                g = r.fields.get("GIL")
                if g is None:
                    continue
                m = re.match(r"^waiting, held by (GET [^?\s]+)\S* \(request ", g)
                key = (m.group(1) if m else
                       "the main thread" if g.endswith(", the main thread, serving no request")
                       else "a thread serving no request" if g.endswith(", serving no request")
                       else "an unknown thread")
                want[key] = want.get(key, 0) + 1
        want = {"waiting for the GIL held by " + k: v for k, v in want.items()}
        r = subprocess.run([sys.executable, TOP, "--json", "--top", "0", log],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        try:
            frames = {f["frame"]: f["count"] for f in json.loads(r.stdout)["frames"]}
        except (ValueError, KeyError, TypeError):
            frames = {"(no output)": r.stderr[-300:]}
        got = {k: v for k, v in frames.items() if k.startswith("waiting for the GIL")}
        self.check(got == want and want.get("waiting for the GIL held by GET /hold") == 1 and
                   want.get("waiting for the GIL held by a thread serving no request", 0) >= 1
                   and frames.get("%s:%d hold_gil" % (APP, MARK["hold"])) == 1,
                   "slowdog-top counts the waits apart, by holder", (got, want))

    # ---- JSON

    def verify_json(self, text, pid):
        reps = {}
        for line in text.splitlines():
            try:
                o = json.loads(line)
            except ValueError:
                self.check(False, "every line is JSON", line[:200])
                continue
            if o.get("type") == "report":
                reps.setdefault(o["request"]["target"].split("?")[0], o)
        hold, wait, bg = reps.get("/hold"), reps.get("/wait"), reps.get("/bg")
        self.check(hold and wait and bg, "reports of /hold, /wait and /bg", sorted(reps))
        if not (hold and wait and bg):
            return
        self.check(hold.get("gil", 0) is None, "the holder's own report: gil null",
                   hold.get("gil"))
        g = wait.get("gil") or {}
        h = g.get("holder") or {}
        self.check(g.get("waiting") is True and g.get("unknown") is None and
                   h.get("tid") == hold["thread"]["tid"] and
                   h.get("request_id") == hold["request_id"] and
                   (h.get("request") or {}).get("target") == "/hold?s=%g" % HOLD and
                   (h.get("running_s") or 0) >= THRESHOLD and
                   h.get("main_thread") is False,
                   "/wait: gil.holder is /hold's thread and request", g)
        fr = ((h.get("python") or {}).get("frames") or [])[:2]
        self.check([(f.get("function"), f.get("file"), f.get("line")) for f in fr] ==
                   [("hold_gil", APP, MARK["hold"]), ("view_hold", APP, MARK["view_hold"])],
                   "/wait: gil.holder.python.frames, innermost first", fr)
        g = bg.get("gil") or {}
        h = g.get("holder") or {}
        self.check(h.get("request") is None and h.get("request_id") is None and
                   h.get("tid") not in (None, bg["thread"]["tid"], pid),
                   "/bg: held by another thread, serving no request", g)
        fr = ((h.get("python") or {}).get("frames") or [])[:2]
        self.check([f.get("function") for f in fr] == ["hold_gil", "background"],
                   "/bg: gil.holder.python.frames", fr)
        main = reps.get("/main")
        self.check((main is not None) == (self.flavour == "stdlib"), "report of /main")
        if main:
            h = (main.get("gil") or {}).get("holder") or {}
            fr = ((h.get("python") or {}).get("frames") or [])[:2]
            self.check(h.get("tid") == pid and h.get("main_thread") is True and
                       h.get("request") is None and
                       [f.get("function") for f in fr] == ["hold_gil", "on_signal"],
                       "/main: held by the main thread", main.get("gil"))
        syms = [f.get("symbol") for f in wait["native"]["frames"]]
        self.check(("take_gil" in [(s or "").split(".")[0] for s in syms]) != self.nodebug,
                   "native stack %s take_gil" % ("without" if self.nodebug else "with"),
                   syms[:4])


def interpreters():
    found = []
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in range(8, 14):
        c = sorted(glob.glob(os.path.join(root, "versions", "3.%d.*" % minor, "bin",
                                          "python3.%d" % minor)))
        if c:
            found.append(("py3.%d" % minor, c[-1], (3, minor)))
        else:
            print("skip 3.%d: not installed" % minor)
    newer = os.environ.get("SLOWDOG_NEWER_PYTHON", "/opt/slowdog-python")
    for minor in (14, 15):
        p = os.path.join(newer, "3.%d" % minor, "bin", "python3.%d" % minor)
        if os.access(p, os.X_OK):
            found.append(("unstable3.%d" % minor, p, (3, minor)))
        else:
            print("skip 3.%d: scripts/newer-python has not fetched it" % minor)
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    lib = harness.library(args.build)
    jobs = [Job(n, p, "stdlib", v) for n, p, v in interpreters()]
    out = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[1])"],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    deb = (3, int(out))
    hide = shutil.which("unshare") and os.geteuid() == 0
    jobs.append(Job("debian-dbg", "/usr/bin/python3", "stdlib", deb))
    if hide:
        jobs.append(Job("debian-stripped-json", "/usr/bin/python3", "stdlib", deb,
                        nodebug=True, json_=True))
    if os.path.exists("/usr/bin/gunicorn"):
        jobs.append(Job("gunicorn-gthread-dbg", "/usr/bin/python3", "gunicorn", deb))
        if hide:
            jobs.append(Job("gunicorn-gthread-stripped", "/usr/bin/python3", "gunicorn",
                            deb, nodebug=True))
    if shutil.which("uwsgi"):
        jobs.append(Job("uwsgi-threads", "/usr/bin/python3", "uwsgi", deb))
    if not hide:
        print("skip the runs without debug symbols: unshare needs root")
    if args.k:
        jobs = [j for j in jobs if any(k in j.name for k in args.k)]
    pending = list(jobs)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not pending:
                    return
                j = pending.pop(0)
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    j.run(lib, tmp)
                except Exception as e:  # a bug of the test: fail, go on
                    j.check(False, "job ran", repr(e))
    ws = [threading.Thread(target=worker) for _ in range(2)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    failed = 0
    for j in jobs:
        for ok, what, detail in j.results:
            print("%s %-26s %s%s" % ("ok  " if ok else "FAIL", j.name, what,
                                     "" if ok and not args.v else ": %s" % (detail,)))
            failed += not ok
        if args.v and any(not ok for ok, _w, _d in j.results):
            print(j.log)
    print("%d checks, %d failed" % (sum(len(j.results) for j in jobs), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

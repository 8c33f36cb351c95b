#!/usr/bin/python3
"""Fleet outputs end to end: the syslog sink against a real rsyslogd and
statsd metrics against the real statsd daemon.

  tests/fleet/run.py [BUILD_DIR]          (default build dir: build)

syslog: rsyslogd (Debian package rsyslog) listens on loopback UDP (and ::1
when there is IPv6) and writes every message as a JSON line
(rsyslog.conf.in); tests/integration/stdserver.py and gunicorn run with
the library and SLOWDOG_LOG=syslog://..., text and JSON reports. The local
form (SLOWDOG_LOG=syslog) goes to a second rsyslogd with imuxsock: at
/dev/log itself when there is none (removed afterwards), or, when journald
or another daemon owns /dev/log, at a socket of ours bind-mounted on
/dev/log in a private mount namespace (unshare). It needs root and is
skipped without. Then bad addresses, a receiver that is not there, a
receiver that does not read.

statsd: the npm package statsd 0.9.0 (installed into tests/fleet/.node on
first use, node and npm needed) with a 500 ms flush and its graphite
backend, which sends the flushed counters and timer statistics as
plaintext to a TCP listener of ours. DogStatsD tags and bad settings are
checked on the raw datagrams with a UDP listener of ours.

Standard library only. Exit status 1 on any failure; the temporary
directory is kept then.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
from harness import PY, ROOT, STDSERVER, free_port, wait_for  # noqa: E402
INTEG = harness.INTEGRATION
BUILD = harness.build_dir()
LIB = harness.library(BUILD)
JOB = os.path.join(ROOT, "tests", "api", "job.py")
RSYSLOGD = "/usr/sbin/rsyslogd"
NODE_DIR = os.path.join(HERE, ".node")
STATSD_VERSION = "0.9.0"
STATSD_JS = os.path.join(NODE_DIR, "node_modules", "statsd", "stats.js")
HOSTNAME = socket.gethostname()

failures = []
lock = threading.Lock()
starting = threading.BoundedSemaphore(2)


def check(name, cond, detail=""):
    with lock:
        print("%s %s%s" % ("ok  " if cond else "FAIL", name,
                           "" if cond else ": " + str(detail)[:1500]),
              flush=True)
        if not cond:
            failures.append(name)
    return cond


# Other test suites may load the machine: times are checked loosely.
FAST_S = 2.0


def plausible(s, ms=None):
    """A request that slept s seconds took ms milliseconds: at least s (less
    the coarse clock's few milliseconds), at most 3 s more. Without ms, the
    range as text."""
    lo, hi = s * 1000 - 10, s * 1000 + 3000
    if ms is None:
        return "%d-%d" % (lo, hi)
    return lo <= ms <= hi


def skip(name, why):
    with lock:
        print("skip %s: %s" % (name, why), flush=True)


def has_ipv6():
    try:
        free_port(socket.SOCK_DGRAM, socket.AF_INET6, "::1")
        return True
    except OSError:
        return False


def parallel(*fns):
    """Runs the functions at once; an exception is a failure."""
    def run(fn):
        try:
            fn()
        except Exception as ex:  # a bug here must not hide the others
            import traceback
            check("%s ran" % fn.__name__, False,
                  "".join(traceback.format_exception(ex)))
    ts = [threading.Thread(target=run, args=(f,)) for f in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def env_with(**kw):
    return harness.env(LIB, threshold="300ms", **kw)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# --- the server under test ---------------------------------------------

class Server(harness.Server):
    """A web server with the library preloaded: stdserver.py (app is a
    module:callable of tests/integration or tests/fleet) or gunicorn."""

    def __init__(self, tmp, name, env, app="app:app", gunicorn=False,
                 prefix=(), timeout=60):
        self.name = name
        if gunicorn:
            cmd = ["/usr/bin/gunicorn", "--chdir", INTEG, "-b",
                   "127.0.0.1:PORT", "-w", "2", "-k", "sync",
                   "--timeout", str(timeout), app]
        else:
            cmd = [PY, STDSERVER, "PORT", app]
        self.err = ""
        self.rc = None
        # Interpreters starting all at once starve the servers already
        # running of CPU, and their watchdogs report late.
        with starting:
            harness.Server.__init__(self, list(prefix) + cmd, dict(env, PYTHONPATH=HERE),
                                    os.path.join(tmp, name + ".stderr"), cwd=ROOT,
                                    stdout="null", wait=20, must_start=False)

    def request(self, method, path):
        t0 = time.monotonic()
        r = {"method": method, "path": path, "status": None, "body": b"",
             "served_by": None}
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            c.request(method, path, body=b"x" * 10 if method == "POST" else None)
            resp = c.getresponse()
            r["status"] = resp.status
            r["body"] = resp.read()
            sb = resp.getheader("X-Served-By")
            if sb:
                r["served_by"] = int(sb.split("/")[0])
            c.close()
        except Exception as ex:
            r["body"] = repr(ex)
        r["seconds"] = time.monotonic() - t0
        return r

    def get(self, paths):
        """Makes the requests all at once ("/x" or ("POST", "/x"))."""
        return harness.at_once(
            lambda p: self.request(*(p if isinstance(p, tuple) else ("GET", p))), paths)

    def stderr(self):
        return self.output()

    def stop(self):
        harness.Server.stop(self)
        self.rc = self.returncode
        self.err = self.output()
        return self

    def check_fine(self, what, replies):
        bad = [(r["path"], r["status"], r["body"][:200]) for r in replies
               if r["status"] not in (200, 404)]
        check("%s: every response arrives" % what, not bad, bad)
        check("%s: the server ran to the end and exited cleanly" % what,
              self.alive and self.rc == 0,
              "alive %s, exit status %s; stderr:\n%s"
              % (self.alive, self.rc, self.err[-1500:]))


def warnings(err):
    """slowdog's own lines on standard error, reports and finished lines
    left out."""
    return [l for l in err.splitlines()
            if l.startswith("slowdog:") and not l.startswith("slowdog: request ")
            and not l.startswith("slowdog: debug:")]


def request_line(msg):
    m = re.search(r"^Request:\s+(.*)$", msg, re.M)
    return m.group(1) if m else None


# --- rsyslog -----------------------------------------------------------

class Rsyslog:
    def __init__(self, tmp, name, inputs):
        self.dir = os.path.join(tmp, name)
        os.mkdir(self.dir)
        self.out = os.path.join(self.dir, "messages.jsonl")
        with open(os.path.join(HERE, "rsyslog.conf.in")) as f:
            conf = (f.read().replace("@DIR@", self.dir)
                    .replace("@OUT@", self.out).replace("@INPUTS@", inputs))
        self.conf = os.path.join(self.dir, "rsyslog.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = os.path.join(self.dir, "rsyslogd.out")
        self.server = harness.Server(
            [RSYSLOGD, "-n", "-f", self.conf, "-i", os.path.join(self.dir, "rsyslogd.pid")],
            dict(os.environ), self.log, cwd=self.dir, wait=None)
        self.p = self.server.p

    def records(self, pid=None):
        out = []
        try:
            with open(self.out, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if pid is None or r.get("procid") == str(pid):
                        out.append(r)
        except OSError:
            pass
        return out

    def ready(self, send):
        """Sends probe messages with send(text) until one is written."""
        marker = "fleet-probe-%d" % os.getpid()
        last = [0.0]

        def seen():
            if self.p.poll() is not None:
                return True
            if time.monotonic() - last[0] > 0.25:
                last[0] = time.monotonic()
                try:
                    send(marker)
                except OSError:
                    pass
            return any(marker in r.get("msg", "") for r in self.records())
        ok = wait_for(seen, 15) and self.p.poll() is None
        return check("rsyslogd (%s) starts and writes messages"
                     % os.path.basename(self.dir), ok, tail(self.log))

    def stop(self):
        self.server.stop()


def udp_send(port, family=socket.AF_INET, addr="127.0.0.1"):
    def send(text):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.sendto(("<14>1 - %s fleettest - - - %s" % (HOSTNAME, text)).encode(),
                 (addr, port))
        s.close()
    return send


def unix_send(path):
    def send(text):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(("<14>fleettest: %s" % text).encode(), path)
        finally:
            s.close()
    return send


def check_syslog_records(what, recs, pid, slow, fast, udp=True, min_s=0.0):
    """One report and one finished line per slow request, none for the
    fast ones, in rsyslog's parsed form."""
    reports = [r for r in recs if "--- slowdog: slow request ---" in r["msg"]]
    finished = [r for r in recs if " finished after " in r["msg"]]
    for path in slow:
        mine = [r for r in reports if request_line(r["msg"]) == "GET " + path]
        if not check("%s: one report for GET %s" % (what, path), len(mine) == 1,
                     "%d of them; request lines seen: %s" % (
                         len(mine), [request_line(r["msg"]) for r in reports])):
            continue
        r = mine[0]
        msg = r["msg"]
        frame = "in recurse" if path.startswith("/deep") else "in slow_sleep"
        problems = []
        if r["app"] != "slowdog":
            problems.append("app name %r" % r["app"])
        if r["procid"] != str(pid):
            problems.append("procid %r, server pid %d" % (r["procid"], pid))
        if r["facility"] != "user" or r["severity"] != "warning":
            problems.append("%s.%s" % (r["facility"], r["severity"]))
        if udp:
            if r["msgid"] != "report":
                problems.append("msgid %r" % r["msgid"])
            if r["hostname"] != HOSTNAME:
                problems.append("hostname %r" % r["hostname"])
            # the request's id (and its ids, it has none) as structured data
            rid = re.search(r"^Request-Id: (\S+)$", msg, re.M)
            if not rid or r.get("sd") != '[slowdog@32473 request_id="%s"]' % rid.group(1):
                problems.append("structured data %r" % r.get("sd"))
        if not msg.lstrip(" ").startswith("--- slowdog: slow request ---"):
            problems.append("message starts %r" % msg[:60])
        if frame not in msg or "app.py" not in msg:
            problems.append("no Python frame %r" % frame)
        if not msg.rstrip().endswith("---") or "--- end of slowdog report" not in msg:
            problems.append("cut short (%d bytes), ends %r" % (len(msg), msg[-80:]))
        try:
            ts = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
            if abs((datetime.now(timezone.utc) - ts).total_seconds()) > 120:
                problems.append("timestamp %s" % r["timestamp"])
        except ValueError:
            problems.append("timestamp %r" % r["timestamp"])
        check("%s: the report of GET %s is whole, with app name, procid%s, "
              "severity and Python frame" % (what, path,
                                             ", msgid, hostname" if udp else ""),
              not problems, "; ".join(problems))
    for path in slow:
        mine = [r for r in finished if r["msg"].endswith(": GET " + path)]
        if not check("%s: one finished line for GET %s" % (what, path),
                     len(mine) == 1, [r["msg"] for r in finished]):
            continue
        r = mine[0]
        m = re.search(r"finished after ([0-9.]+) s", r["msg"])
        problems = []
        if r["severity"] != "notice" or r["facility"] != "user":
            problems.append("%s.%s" % (r["facility"], r["severity"]))
        if udp and r["msgid"] != "finished":
            problems.append("msgid %r" % r["msgid"])
        if udp and not re.match(r'^\[slowdog@32473 request_id="\d+-\d+"\]$',
                                r.get("sd") or ""):
            problems.append("structured data %r" % r.get("sd"))
        if r["procid"] != str(pid) or r["app"] != "slowdog":
            problems.append("app %r procid %r" % (r["app"], r["procid"]))
        if not m or float(m.group(1)) < min_s - 0.01:  # coarse clock
            problems.append("duration in %r" % r["msg"])
        check("%s: the finished line of GET %s has its severity%s and "
              "duration" % (what, path, ", msgid" if udp else ""),
              not problems, "; ".join(problems))
    stray = [r["msg"][:120] for r in recs
             if any(f in r["msg"] for f in fast)]
    check("%s: nothing for fast requests" % what, not stray, stray)
    check("%s: nothing else (%d records)" % (what, 2 * len(slow)),
          len(recs) == 2 * len(slow), [r["msg"][:100] for r in recs])


# --- syslog over UDP -----------------------------------------------------

def syslog_udp(tmp):
    port = free_port(socket.SOCK_DGRAM)
    inputs = ('module(load="imudp")\n'
              'input(type="imudp" address="127.0.0.1" port="%d")\n' % port)
    port6 = None
    if has_ipv6():
        port6 = free_port(socket.SOCK_DGRAM, socket.AF_INET6, "::1")
        inputs += 'input(type="imudp" address="::1" port="%d")\n' % port6
    rs = Rsyslog(tmp, "rsyslog-udp", inputs)
    try:
        if not rs.ready(udp_send(port)):
            return
        target = "syslog://127.0.0.1:%d" % port

        def text():
            srv = Server(tmp, "udp-text", env_with(SLOWDOG_LOG=target))
            slow = ["/sleep?s=1.0&n=%d" % i for i in (1, 2, 3)]
            slow.append("/deep?n=150&s=1.0")
            fast = ["/fast"]
            replies = srv.get(slow + fast * 3)
            wait_for(lambda: len(rs.records(srv.pid)) >= 2 * len(slow), 5)
            time.sleep(0.4)  # anything extra arrives by now
            srv.stop()
            srv.check_fine("syslog:// text", replies)
            recs = rs.records(srv.pid)
            check_syslog_records("syslog:// text", recs, srv.pid, slow, fast,
                                 min_s=1.0)
            big = [len(r["msg"]) for r in recs if "/deep" in r["msg"]]
            check("syslog:// text: a report over rsyslog's 8 KiB default "
                  "arrives whole", big and max(big) > 8192, big)
            check("syslog:// text: nothing on standard error",
                  not warnings(srv.err), srv.err[-800:])

        def json_lines():
            srv = Server(tmp, "udp-json",
                         env_with(SLOWDOG_LOG=target, SLOWDOG_FORMAT="json"))
            slow = ["/sleep?s=1.0&n=%d" % i for i in (1, 2)]
            replies = srv.get(slow + ["/fast", "/fast"])
            wait_for(lambda: len(rs.records(srv.pid)) >= 4, 5)
            time.sleep(0.4)
            srv.stop()
            srv.check_fine("syslog:// json", replies)
            recs = rs.records(srv.pid)
            check("syslog:// json: two reports and two finished lines",
                  len(recs) == 4, [r["msg"][:100] for r in recs])
            for r in recs:
                try:
                    obj = json.loads(r["msg"])
                except ValueError as ex:
                    check("syslog:// json: the message is one JSON object", False,
                          "%s: %r" % (ex, r["msg"][:300]))
                    continue
                problems = []
                if obj.get("type") != r["msgid"]:
                    problems.append("type %r, msgid %r" % (obj.get("type"), r["msgid"]))
                target_ = (obj.get("request") or {}).get("target")
                if target_ not in slow:
                    problems.append("target %r" % target_)
                if obj.get("type") == "report":
                    if (obj.get("process") or {}).get("pid") != srv.pid:
                        problems.append("process.pid %r" % obj.get("process"))
                    if "slow_sleep" not in r["msg"]:
                        problems.append("no slow_sleep frame")
                    if r["severity"] != "warning":
                        problems.append("severity " + r["severity"])
                elif obj.get("type") == "finished":
                    if obj.get("pid") != srv.pid or obj.get("duration_s", 0) < 0.99:
                        problems.append("pid %r duration %r"
                                        % (obj.get("pid"), obj.get("duration_s")))
                    if r["severity"] != "notice":
                        problems.append("severity " + r["severity"])
                check("syslog:// json: %s of %s parses and matches its syslog "
                      "header" % (r["msgid"], target_), not problems,
                      "; ".join(problems))

        def gunicorn():
            if not os.path.exists("/usr/bin/gunicorn"):
                skip("syslog:// gunicorn", "no /usr/bin/gunicorn")
                return
            srv = Server(tmp, "udp-gunicorn", env_with(SLOWDOG_LOG=target),
                         gunicorn=True)
            slow = ["/sleep?s=1.0&g=%d" % i for i in range(4)]
            replies = srv.get(slow + ["/fast"])
            mine = lambda: [r for r in rs.records()
                            if "&g=" in r["msg"] and r["msgid"] == "finished"]
            wait_for(lambda: len(mine()) >= 4, 5)
            srv.stop()
            srv.check_fine("syslog:// gunicorn -w 2", replies)
            by_path = {r["path"]: r["served_by"] for r in replies}
            reports = [r for r in rs.records()
                       if r["msgid"] == "report" and "&g=" in r["msg"]]
            wrong = [(request_line(r["msg"]), r["procid"],
                      by_path.get(request_line(r["msg"])[4:]))
                     for r in reports
                     if str(by_path.get(request_line(r["msg"])[4:])) != r["procid"]]
            check("syslog:// gunicorn -w 2: four reports, each with the pid of "
                  "the worker that served it",
                  len(reports) == 4 and not wrong and
                  len({r["procid"] for r in reports}) == 2,
                  "%d reports; wrong: %s" % (len(reports), wrong))

        def ipv6():
            if not port6:
                skip("syslog://[::1]", "no IPv6 loopback")
                return
            srv = Server(tmp, "udp-ipv6",
                         env_with(SLOWDOG_LOG="syslog://[::1]:%d" % port6))
            replies = srv.get(["/sleep?s=1.0&n=6"])
            wait_for(lambda: len(rs.records(srv.pid)) >= 2, 5)
            srv.stop()
            srv.check_fine("syslog://[::1]:PORT", replies)
            check_syslog_records("syslog://[::1]:PORT", rs.records(srv.pid),
                                 srv.pid, ["/sleep?s=1.0&n=6"], [])

        def burst():
            # A stall makes many requests slow at once: their reports leave
            # back to back, and rsyslog must get them all.
            srv = Server(tmp, "udp-burst", env_with(SLOWDOG_LOG=target))
            slow = ["/sleep?s=1.5&b=%d" % i for i in range(24)]
            replies = srv.get(slow)
            wait_for(lambda: len(rs.records(srv.pid)) >= 48, 5)
            srv.stop()
            srv.check_fine("syslog:// 24 slow at once", replies)
            got = rs.records(srv.pid)
            check("syslog:// 24 slow at once: 24 reports and 24 finished lines "
                  "arrive", len(got) == 48, "%d records" % len(got))

        parallel(text, json_lines, gunicorn, ipv6, burst)
    finally:
        rs.stop()


# --- unusable syslog addresses, a receiver that is not there ------------

def syslog_unusable(tmp):
    cases = [("syslog://nohost.invalid:514", "nohost.invalid"),
             ("syslog://127.0.0.1", "syslog://127.0.0.1"),
             ("syslog://127.0.0.1:", "syslog://127.0.0.1:"),
             ("syslog://:514", "syslog://:514")]
    if not os.path.lexists("/dev/log"):
        cases.append(("syslog", "/dev/log"))

    def bad(value, needle):
        def run():
            name = "bad-" + re.sub(r"[^a-z0-9]+", "_", value)
            srv = Server(tmp, name, env_with(SLOWDOG_LOG=value))
            replies = srv.get(["/sleep?s=1.0&n=1", "/fast"])
            wait_for(lambda: "finished after" in srv.stderr(), 3)
            srv.stop()
            what = "SLOWDOG_LOG=%s" % value
            srv.check_fine(what, replies)
            w = warnings(srv.err)
            check("%s: one warning naming it, reports to standard error"
                  % what, len(w) == 1 and needle in w[0] and
                  "standard error" in w[0], w)
            check("%s: the report and finished line are on standard error"
                  % what, "Request:    GET /sleep?s=1.0&n=1" in srv.err and
                  "finished after" in srv.err, srv.err[-600:])
        run.__name__ = "bad_" + value
        return run

    def closed():
        # Nobody listens: each datagram draws an ICMP port unreachable,
        # and the next send fails with ECONNREFUSED.
        port = free_port(socket.SOCK_DGRAM)
        srv = Server(tmp, "udp-closed",
                     env_with(SLOWDOG_LOG="syslog://127.0.0.1:%d" % port))
        replies = srv.get(["/sleep?s=1.0&n=%d" % i for i in range(3)]
                          + ["/fast"] * 3)
        time.sleep(0.4)
        # The receiver comes up: later reports reach it.
        got = []
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", port))
        rx.settimeout(0.2)

        def drain():
            end = time.monotonic() + 6
            while time.monotonic() < end and len(got) < 4:
                try:
                    got.append(rx.recv(70000).decode(errors="replace"))
                except socket.timeout:
                    pass
        t = threading.Thread(target=drain)
        t.start()
        replies += [srv.request("GET", "/sleep?s=1.0&n=10"),
                    srv.request("GET", "/sleep?s=1.0&n=11")]
        t.join()
        rx.close()
        srv.stop()
        what = "syslog:// to a closed UDP port"
        srv.check_fine(what, replies)
        slowest_fast = max(r["seconds"] for r in replies if r["path"] == "/fast")
        check("%s: fast requests stay fast" % what, slowest_fast < FAST_S,
              slowest_fast)
        w = warnings(srv.err)
        check("%s: at most one warning, no report on standard error" % what,
              len(w) <= 1 and "Request:" not in srv.err, srv.err[-800:])
        check("%s: reports reach the receiver once it is up" % what,
              any("GET /sleep?s=1.0&n=1" in g for g in got),
              [g[:100] for g in got])

    parallel(*[bad(v, n) for v, n in cases], closed)


# --- the local /dev/log form --------------------------------------------

def can_unshare():
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def syslog_local(tmp):
    if os.geteuid() != 0:
        skip("SLOWDOG_LOG=syslog", "needs root (a syslog socket at /dev/log)")
        return
    created = False
    prefix = ()
    try:
        st = os.lstat("/dev/log")
    except FileNotFoundError:
        st = None
    if st is None:
        sock = "/dev/log"
        created = True
        how = "rsyslogd owns /dev/log"
    elif stat.S_ISSOCK(st.st_mode) and can_unshare():
        # journald (or another daemon) owns /dev/log: put ours in its place
        # for the server alone.
        sock = os.path.join(tmp, "log.sock")
        prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" /dev/log && exec "$@"', sock)
        how = "our socket bind-mounted on /dev/log"
    else:
        skip("SLOWDOG_LOG=syslog", "/dev/log exists and no private mount "
             "namespace can be made to replace it")
        return
    print("local syslog: %s" % how, flush=True)
    inputs = ('module(load="imuxsock" SysSock.Name="%s" '
              'SysSock.RateLimit.Interval="0")' % sock)
    rs = Rsyslog(tmp, "rsyslog-local", inputs)
    rs2 = None
    try:
        if not rs.ready(unix_send(sock)):
            return
        srv = Server(tmp, "local", env_with(SLOWDOG_LOG="syslog"), prefix=prefix)
        slow = ["/sleep?s=1.0&n=%d" % i for i in (1, 2)]
        fast = ["/fast"]
        replies = srv.get(slow + fast * 2)
        wait_for(lambda: len(rs.records(srv.pid)) >= 4, 5)
        time.sleep(0.3)
        what = "SLOWDOG_LOG=syslog"
        check_syslog_records(what, rs.records(srv.pid), srv.pid, slow, fast,
                             udp=False, min_s=1.0)

        # A burst, as with UDP: /dev/log holds few datagrams
        # (net.unix.max_dgram_qlen) before a sender would have to wait.
        burst = ["/sleep?s=1.5&b=%d" % i for i in range(24)]
        replies += srv.get(burst)
        wait_for(lambda: len(rs.records(srv.pid)) >= 4 + 48, 5)
        got = [r for r in rs.records(srv.pid) if "&b=" in r["msg"]]
        check("%s: 24 slow at once: 24 reports and 24 finished lines arrive"
              % what, len(got) == 48, "%d records (max_dgram_qlen %s); "
              "stderr: %s" % (len(got), open("/proc/sys/net/unix/max_dgram_qlen")
                              .read().strip(), warnings(srv.stderr())))

        if created:
            # The syslog daemon restarts (an upgrade, a crash): reports
            # must go to the new one, as with syslog(3).
            rs.stop()
            check("rsyslogd removes /dev/log when it stops",
                  not os.path.lexists("/dev/log"))
            rs2 = Rsyslog(tmp, "rsyslog-local2", inputs)
            if rs2.ready(unix_send(sock)):
                replies += [srv.request("GET", "/sleep?s=1.0&n=30"),
                            srv.request("GET", "/sleep?s=1.0&n=31")]
                ok = wait_for(lambda: any(
                    "GET /sleep?s=1.0&n=31" in r["msg"]
                    for r in rs2.records(srv.pid)), 3)
                check("%s: reports reach a restarted syslog daemon" % what, ok,
                      "%d records at the new daemon; stderr: %s"
                      % (len(rs2.records(srv.pid)), warnings(srv.stderr())))
        srv.stop()
        srv.check_fine(what, replies)
    finally:
        rs.stop()
        if rs2:
            rs2.stop()
        if created and os.path.lexists("/dev/log") and \
                stat.S_ISSOCK(os.lstat("/dev/log").st_mode):
            os.unlink("/dev/log")
    stuck_receiver(tmp, sock, prefix, created)


def stuck_receiver(tmp, sock, prefix, created):
    """A syslog daemon that does not read: the server carries on, reports
    are dropped with one line, and flow again once it reads."""
    what = "SLOWDOG_LOG=syslog, a receiver that does not read"
    if os.path.lexists(sock):
        if created:
            skip(what, "/dev/log came back")
            return
        os.unlink(sock)
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock)
    try:
        srv = Server(tmp, "local-stuck", env_with(SLOWDOG_LOG="syslog"),
                     prefix=prefix)
        slow = ["/deep?n=80&s=1.0&k=%d" % i for i in range(16)]
        out = []
        t = threading.Thread(target=lambda: out.extend(srv.get(slow)))
        t.start()
        time.sleep(0.45)
        fast = [srv.request("GET", "/fast") for _ in range(5)]
        t.join()
        time.sleep(0.3)
        got = []
        rx.settimeout(0.2)

        def drain():
            end = time.monotonic() + 5
            while time.monotonic() < end:
                try:
                    got.append(rx.recv(70000).decode(errors="replace"))
                except socket.timeout:
                    if any("finished after" in g and "GET /sleep?s=1.0&n=40" in g
                           for g in got):
                        return
        d = threading.Thread(target=drain)
        d.start()
        after = srv.request("GET", "/sleep?s=1.0&n=40")
        d.join()
        srv.stop()
        srv.check_fine(what, out + fast + [after])
        check("%s: fast requests stay fast" % what,
              max(r["seconds"] for r in fast) < FAST_S,
              [round(r["seconds"], 3) for r in fast])
        w = warnings(srv.err)
        check("%s: one line says reports are dropped" % what,
              len(w) == 1 and "dropped" in w[0], w)
        check("%s: reports flow again once it reads" % what,
              any("GET /sleep?s=1.0&n=40" in g for g in got),
              "%d datagrams" % len(got))
    finally:
        rx.close()
        if os.path.lexists(sock):
            os.unlink(sock)


# --- statsd ----------------------------------------------------------------

class Graphite:
    """A plaintext graphite receiver: statsd's graphite backend opens a
    connection per flush and sends "name value timestamp" lines."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lines = []
        self.flushes = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                data = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    data += b
            with lock:
                for line in data.decode(errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) == 3:
                        self.lines.append((parts[0], float(parts[1])))
                self.flushes += 1

    def values(self, name):
        with lock:
            return [v for n, v in self.lines if n == name]

    def total(self, name):
        return sum(self.values(name))

    def names(self, prefix):
        with lock:
            return {n for n, _ in self.lines if n.startswith(prefix)}

    def close(self):
        self.sock.close()


class UdpListener:
    """Keeps every datagram; forwards each to forward=(host, port) if set."""

    def __init__(self, forward=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.forward = forward
        self.got = []
        self.running = True
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while self.running:
            try:
                d = self.sock.recv(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            with lock:
                self.got.append(d.decode(errors="replace"))
            if self.forward:
                out.sendto(d, self.forward)

    def datagrams(self):
        with lock:
            return list(self.got)

    def close(self):
        self.running = False
        self.t.join()
        self.sock.close()


def install_statsd():
    if os.path.exists(STATSD_JS):
        return True
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        return check("node and npm are installed (for the statsd daemon)", False)
    os.makedirs(NODE_DIR, exist_ok=True)
    r = subprocess.run([npm, "install", "--prefix", NODE_DIR, "--no-audit",
                        "--no-fund", "--omit=optional", "--loglevel=error",
                        "statsd@" + STATSD_VERSION],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    return check("npm install statsd@%s" % STATSD_VERSION,
                 r.returncode == 0 and os.path.exists(STATSD_JS), r.stdout[-1500:])


def start_statsd(tmp, graphite):
    port = free_port(socket.SOCK_DGRAM)
    conf = {
        "port": port, "address": "127.0.0.1",
        "mgmt_port": free_port(), "mgmt_address": "127.0.0.1",
        "flushInterval": 500, "deleteIdleStats": True,
        "backends": ["./backends/graphite"],
        "graphiteHost": "127.0.0.1", "graphitePort": graphite.port,
        "graphite": {"legacyNamespace": False},
        "automaticConfigReload": False,
    }
    path = os.path.join(tmp, "statsd-config.js")
    with open(path, "w") as f:
        json.dump(conf, f, indent=1)
    log = os.path.join(tmp, "statsd.out")
    with open(log, "w") as out:
        p = subprocess.Popen([shutil.which("node") or "node", STATSD_JS, path],
                             stdout=out, stderr=subprocess.STDOUT)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    last = [0.0]

    def up():
        if p.poll() is not None:
            return True
        if time.monotonic() - last[0] > 0.3:
            last[0] = time.monotonic()
            s.sendto(b"fleet.probe:1|c", ("127.0.0.1", port))
        return graphite.total("stats.counters.fleet.probe.count") > 0
    ok = wait_for(up, 20) and p.poll() is None
    s.close()
    check("statsd %s starts and flushes to graphite" % STATSD_VERSION, ok,
          tail(log))
    return p, port, ok


def endpoints(g, prefix):
    """Endpoint parts of the counters named PREFIX.ENDPOINT.count."""
    return {n[len(prefix):-len(".count")] for n in g.names(prefix)
            if n.endswith(".count")}


def statsd_tests(tmp):
    if not install_statsd():
        return
    g = Graphite()
    p, port, ok = start_statsd(tmp, g)
    try:
        if ok:
            statsd_runs(tmp, g, port)
        print("\n## unusable statsd settings", flush=True)
        statsd_bad(tmp)
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        g.close()


def run_job(tmp, name, env):
    """tests/api/job.py: 1.2 s of work between slowdog_begin("nightly
    import") and slowdog_end()."""
    log = os.path.join(tmp, name + ".log")
    r = subprocess.run([PY, JOB, "1.2"], env=env_with(SLOWDOG_LOG=log, **env),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    check("%s: the job runs" % name, r.returncode == 0, r.stdout[-800:])


def statsd_runs(tmp, g, port):
    statsd = "127.0.0.1:%d" % port
    tee = UdpListener(forward=("127.0.0.1", port))
    raw = UdpListener()

    def names():
        srv = Server(tmp, "statsd-names", env_with(SLOWDOG_STATSD=statsd))
        r = srv.get(["/sleep?s=1.2&n=%d" % i for i in (1, 2, 3)]
                    + ["/fast"] * 3)
        time.sleep(0.4)
        srv.stop()
        srv.check_fine("SLOWDOG_STATSD", r)
        check("SLOWDOG_STATSD: nothing on standard error",
              not warnings(srv.err), srv.err[-500:])

    def prefixed():
        srv = Server(tmp, "statsd-prefix",
                     env_with(SLOWDOG_STATSD=statsd,
                              SLOWDOG_STATSD_PREFIX="web.slow"),
                     app="fleetapp:app")
        # 1 s: under the load of this whole test a first report can take a
        # few hundred milliseconds, and a request that ends meanwhile is not
        # reported.
        r = srv.get(["/api/users/?id=1&s=1.0", ("POST", "/api/v1/items.json?s=1.0"),
                     "/?s=1.0", "/fast"])
        time.sleep(0.4)
        srv.stop()
        srv.check_fine("SLOWDOG_STATSD_PREFIX=web.slow", r)

    def gunicorn():
        if not os.path.exists("/usr/bin/gunicorn"):
            skip("SLOWDOG_STATSD under gunicorn", "no /usr/bin/gunicorn")
            return
        srv = Server(tmp, "statsd-gunicorn",
                     env_with(SLOWDOG_STATSD=statsd,
                              SLOWDOG_STATSD_PREFIX="gunicorn"), gunicorn=True)
        r = srv.get(["/sleep?s=1.0&n=%d" % i for i in range(4)] + ["/fast"])
        time.sleep(0.4)
        srv.stop()
        srv.check_fine("SLOWDOG_STATSD under gunicorn -w 2", r)

    def died():
        # A worker killed with SIGKILL mid-request (after its report): its
        # master counts the request that never finished.
        if not os.path.exists("/usr/bin/gunicorn"):
            skip("SLOWDOG_STATSD died_requests", "no /usr/bin/gunicorn")
            return
        srv = Server(tmp, "statsd-died",
                     env_with(SLOWDOG_STATSD=statsd, SLOWDOG_STATSD_PREFIX="died"),
                     gunicorn=True)
        box = []
        th = threading.Thread(target=lambda: box.extend(srv.get(["/sleep?s=8&n=1"])))
        th.start()
        pid = []

        def reported():
            m = re.search(r"Request: +GET /sleep\?s=8&n=1\n(?:.*\n)*?Process: +(\d+)",
                          srv.output())
            if m:
                pid.append(int(m.group(1)))
            return bool(m)
        if check("SLOWDOG_STATSD died_requests: the request is reported",
                 wait_for(reported, 15), srv.output()[-800:]):
            os.kill(pid[0], signal.SIGKILL)
        th.join()
        srv.stop()
        check("SLOWDOG_STATSD died_requests: the killed worker's request "
              "got no reply", box and box[0]["status"] is None, box)
        check("SLOWDOG_STATSD died_requests: gunicorn exited cleanly",
              srv.alive and srv.rc == 0, srv.err[-800:])

    def job():
        run_job(tmp, "statsd-job", {"SLOWDOG_STATSD": statsd})

    def tags():
        srv = Server(tmp, "statsd-tags",
                     env_with(SLOWDOG_STATSD="127.0.0.1:%d" % tee.port,
                              SLOWDOG_STATSD_TAGS="1",
                              SLOWDOG_STATSD_PREFIX="tagged"),
                     app="fleetapp:app")
        r = srv.get(["/sleep?s=1.0", "/api/users?id=1&s=1.0", "/fast"])
        time.sleep(0.4)
        srv.stop()
        srv.check_fine("SLOWDOG_STATSD_TAGS=1", r)

    def tags_job():
        run_job(tmp, "statsd-tags-job",
                {"SLOWDOG_STATSD": "127.0.0.1:%d" % tee.port,
                 "SLOWDOG_STATSD_TAGS": "1", "SLOWDOG_STATSD_PREFIX": "tagged"})

    def tags_odd_paths():
        # Paths are the client's: ',' and '|' must not make extra tags or
        # break the line.
        srv = Server(tmp, "statsd-tags-odd",
                     env_with(SLOWDOG_STATSD="127.0.0.1:%d" % raw.port,
                              SLOWDOG_STATSD_TAGS="1"),
                     app="fleetapp:app")
        r = srv.get(["/a,env:prod?s=1.0", "/b|c?s=1.0", "/d#e%20f?s=1.0"])
        time.sleep(0.4)
        srv.stop()
        srv.check_fine("SLOWDOG_STATSD_TAGS=1, odd paths", r)

    parallel(names, prefixed, gunicorn, died, job, tags, tags_job, tags_odd_paths)

    # What statsd flushed.
    want = {
        "stats.counters.slowdog.slow_requests.GET.sleep.count": 3,
        "stats.timers.slowdog.slow_request_duration.GET.sleep.count": 3,
        "stats.counters.slowdog.slow_requests.label.nightly_import.count": 1,
        "stats.counters.web.slow.slow_requests.GET.api.users.count": 1,
        "stats.counters.web.slow.slow_requests.POST.api.v1.items_json.count": 1,
        "stats.counters.web.slow.slow_requests.GET.count": 1,
        "stats.counters.gunicorn.slow_requests.GET.sleep.count": 4,
        "stats.counters.tagged.slow_requests.count;method=GET;path=-sleep": 1,
        "stats.counters.died.died_requests.GET.sleep.count": 1,
    }
    wait_for(lambda: all(g.total(k) >= v for k, v in want.items()), 5)
    flushes = g.flushes
    wait_for(lambda: g.flushes >= flushes + 2, 3)  # late extras show by now
    for k, v in want.items():
        check("statsd flushed %s = %d" % (k, v), g.total(k) == v, g.total(k))

    t = "stats.timers.slowdog.slow_request_duration.GET.sleep."
    lo, hi = g.values(t + "lower"), g.values(t + "upper")
    check("statsd timer slowdog.slow_request_duration.GET.sleep: 1.2 s "
          "requests took %s ms" % plausible(1.2), lo and hi and
          plausible(1.2, min(lo)) and plausible(1.2, max(hi)),
          "lower %s upper %s" % (lo, hi))
    t = "stats.timers.slowdog.slow_request_duration.label.nightly_import."
    lo, hi = g.values(t + "lower"), g.values(t + "upper")
    check("statsd timer ...label.nightly_import: 1.2 s of work took %s ms"
          % plausible(1.2), g.total(t + "count") == 1 and
          plausible(1.2, min(lo)) and plausible(1.2, max(hi)),
          "count %s lower %s upper %s" % (g.total(t + "count"), lo, hi))
    for ep in ("GET.api.users", "POST.api.v1.items_json", "GET"):
        t = "stats.timers.web.slow.slow_request_duration.%s." % ep
        up = g.values(t + "upper")
        check("statsd timer web.slow.slow_request_duration.%s: one, "
              "%s ms" % (ep, plausible(1.0)), g.total(t + "count") == 1 and
              up and plausible(1.0, max(up)), "count %s upper %s"
              % (g.total(t + "count"), up))
    eps = endpoints(g, "stats.counters.slowdog.slow_requests.")
    check("statsd: slowdog.slow_requests has only GET.sleep and "
          "label.nightly_import (nothing for fast requests)",
          eps == {"GET.sleep", "label.nightly_import"}, eps)
    eps = endpoints(g, "stats.counters.web.slow.slow_requests.")
    check("statsd: web.slow endpoints are GET.api.users, "
          "POST.api.v1.items_json and GET", eps ==
          {"GET.api.users", "POST.api.v1.items_json", "GET"}, eps)
    check("statsd: no metric for /fast",
          not [n for n in g.names("stats.") if "fast" in n],
          [n for n in g.names("stats.") if "fast" in n])
    check("statsd: bad_lines_seen stays 0",
          g.total("stats.counters.statsd.bad_lines_seen.count") == 0,
          g.total("stats.counters.statsd.bad_lines_seen.count"))

    # The DogStatsD datagrams as sent.
    tee.close()
    raw.close()
    d = tee.datagrams()
    for ep in ("/sleep", "/api/users"):
        tag = "|#method:GET,path:%s" % ep
        c = [x for x in d if x == "tagged.slow_requests:1|c" + tag]
        ms = [int(m.group(1)) for x in d for m in
              [re.match(r"^tagged\.slow_request_duration:(\d+)\|ms" +
                        re.escape(tag) + "$", x)] if m]
        check("SLOWDOG_STATSD_TAGS=1: one counter and one %s ms timer "
              % plausible(1.0) +
              "tagged path:%s" % ep, len(c) == 1 and len(ms) == 1 and
              plausible(1.0, ms[0]), d)
    lab = [x for x in d if x.startswith("tagged.slow_requests:1|c|#label:nightly")]
    check("SLOWDOG_STATSD_TAGS=1: explicit work is tagged with its label",
          len(lab) == 1, d)
    check("SLOWDOG_STATSD_TAGS=1: nothing for /fast",
          not [x for x in d if "fast" in x], d)
    check("SLOWDOG_STATSD_TAGS=1: 6 datagrams in all", len(d) == 6, d)
    odd = raw.datagrams()
    broken = []
    for x in odd:
        head, _, tagpart = x.partition("|#")
        keys = [t.split(":", 1)[0] for t in tagpart.split(",")]
        if not re.match(r"^slowdog\.slow_request[a-z_]*:\d+\|(c|ms)$", head) \
                or "|" in tagpart or sorted(keys) != ["method", "path"]:
            broken.append(x)
    check("SLOWDOG_STATSD_TAGS=1: ',' '|' '#' in a path make no extra tags "
          "and no broken lines", len(odd) == 6 and not broken,
          "%d datagrams; broken: %s" % (len(odd), broken))


def statsd_bad(tmp):
    """Unusable settings: one line, and the server and its log as ever."""
    sink_prefix = UdpListener()
    sink_tags = UdpListener()
    closed = free_port(socket.SOCK_DGRAM)
    cases = [
        ({"SLOWDOG_STATSD": "nohost.invalid:8125"}, "nohost.invalid", None),
        ({"SLOWDOG_STATSD": "127.0.0.1"}, "SLOWDOG_STATSD=", None),
        ({"SLOWDOG_STATSD": "127.0.0.1:"}, "SLOWDOG_STATSD=", None),
        ({"SLOWDOG_STATSD": ":8125"}, "SLOWDOG_STATSD=", None),
        ({"SLOWDOG_STATSD": "127.0.0.1:notaport"}, "SLOWDOG_STATSD=", None),
        ({"SLOWDOG_STATSD": "127.0.0.1:%d" % sink_prefix.port,
          "SLOWDOG_STATSD_PREFIX": "bad prefix!"}, "SLOWDOG_STATSD_PREFIX=",
         (sink_prefix, "slowdog.slow_requests.GET.sleep:1|c")),
        ({"SLOWDOG_STATSD": "127.0.0.1:%d" % sink_tags.port,
          "SLOWDOG_STATSD_TAGS": "maybe"}, "SLOWDOG_STATSD_TAGS=",
         (sink_tags, "slowdog.slow_requests.GET.sleep:1|c")),
        ({"SLOWDOG_STATSD": "127.0.0.1:%d" % closed}, None, None),
    ]

    def case(env, needle, sink):
        def run():
            what = " ".join("%s=%s" % kv for kv in env.items())
            if not needle:
                what += " (nobody listening)"
            name = "statsd-bad-" + re.sub(r"[^a-z0-9]+", "_", what.lower())[:60]
            log = os.path.join(tmp, name + ".log")
            srv = Server(tmp, name, env_with(SLOWDOG_LOG=log, **env))
            r = srv.get(["/sleep?s=1.0&n=%d" % i for i in range(3)]
                        + ["/fast"] * 2)
            time.sleep(0.4)
            srv.stop()
            srv.check_fine(what, r)
            w = warnings(srv.err)
            if needle:
                check("%s: one warning naming it" % what,
                      len(w) == 1 and needle in w[0], w)
            else:
                check("%s: no warning" % what, not w, w)
            try:
                text = open(log).read()
            except OSError:
                text = ""
            n = text.count("--- slowdog: slow request ---")
            check("%s: reports are still logged" % what,
                  n >= 1 and text.count("finished after") == n, text[-300:])
            if sink:
                time.sleep(0.2)
                got = sink[0].datagrams()
                check("%s: metrics still sent, with the default" % what,
                      n >= 1 and got.count(sink[1]) == n, got)
        return run
    try:
        parallel(*[case(*c) for c in cases])
    finally:
        sink_prefix.close()
        sink_tags.close()


def main():
    if not os.path.exists(LIB):
        print("fleet: no %s (build first: ninja -C %s)" % (LIB, BUILD),
              file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="sd-fleet.")
    t0 = time.monotonic()

    def section(name):
        print("\n## %s (at %.1f s)" % (name, time.monotonic() - t0), flush=True)
    try:
        def syslog_all():
            if not os.path.exists(RSYSLOGD):
                check("%s is installed (Debian package rsyslog)" % RSYSLOGD, False)
                syslog_unusable(tmp)
                return
            # The local form last: it may create /dev/log, whose absence
            # syslog_unusable checks.
            parallel(lambda: syslog_udp(tmp), lambda: syslog_unusable(tmp))
            section("local syslog")
            syslog_local(tmp)

        section("syslog over UDP, unusable addresses")
        syslog_all()
        section("statsd")
        statsd_tests(tmp)
    finally:
        print("\nfleet: %d failure(s) in %.1f s%s" % (
            len(failures), time.monotonic() - t0,
            "; kept " + tmp if failures else ""))
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

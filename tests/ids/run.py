#!/usr/bin/python3
"""The request's ids and its wait in the proxy, end to end.

  tests/ids/run.py [BUILD_DIR]          (default build dir: build)

Real servers with libslowdog.so preloaded, side by side: gunicorn
(gthread), uWSGI speaking HTTP, uWSGI behind nginx (uwsgi_pass: the
headers arrive as HTTP_* variables), and gunicorn behind nginx
(proxy_pass, nginx stamping X-Request-Start "t=${msec}"). Each gets slow
requests with every id header alone, all together (and one that
SLOWDOG_HEADERS names), repeated, 8 KiB long, with control and other
hostile bytes, an invalid traceparent, and proxy stamps in every form
slowdog(7) lists, in the future and absurd. The log is parsed strictly
(tests/slowlog.py; one server writes JSON lines, each parsed): each
report must show exactly the ids sent (escaped, cut with a mark), its
finished line the same, the Queued line what the stamp says. Then
SLOWDOG_QUEUE=count (JSON), and the ids in syslog's structured data
(RFC 5424 over UDP, to a listener of ours).

Standard library only. Exit status 1 on any failure.
"""
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
import slowlog  # noqa: E402

LIB = harness.library()
APP_DIR = harness.INTEGRATION
failures = []
lock = threading.Lock()


def check(name, cond, detail=""):
    with lock:
        print("%s %s%s" % ("ok  " if cond else "FAIL", name,
                           "" if cond else ": " + str(detail)[:1500]), flush=True)
        if not cond:
            failures.append(name)
    return cond


def esc(b):
    """A value as reports show it: bytes outside 0x21..0x7e and the
    backslash as \\xHH, trailing whitespace gone, cut at 160 bytes."""
    b = b.strip(b" \t")
    cut = len(b) > 160
    b = b[:160]
    out = "".join(chr(c) if 0x21 <= c <= 0x7e and c != 0x5c else "\\x%02x" % c
                  for c in b)
    return out + ("..." if cut else "")


TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
IDS = [  # header, value
    (b"traceparent", TP),
    (b"X-Request-Id", b"5f1c4a1e-0b7e-4c39-9d2a-7b2f1c0d9e11"),
    (b"X-Correlation-Id", b"corr-42"),
    (b"X-Amzn-Trace-Id", b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
    (b"sentry-trace", b"771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1"),
    (b"X-Cloud-Trace-Context", b"105445aa7843bc8bf206b12000100000/1;o=1"),
    (b"X-B3-TraceId", b"80f198ee56343ba864fe8b2a57d3eff7"),
    (b"b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
]


def shown(headers):
    """{name: value} a report must show for these (header, value) pairs:
    the first of each name."""
    out = {}
    for h, v in headers:
        k = h.decode().lower()
        if k in ("x-request-start", "x-queue-start"):
            continue
        if k == "traceparent" and v == TP:
            out.setdefault("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736")
            out.setdefault("span-id", "00f067aa0ba902b7")
        else:
            out.setdefault(k, esc(v))
    return out


class Case(object):
    """One slow request: its headers, what its report must say."""

    def __init__(self, name, headers, ids=None, queued=None, notes=(), sleep=0.9):
        self.name = name
        self.headers = headers
        self.ids = shown(headers) if ids is None else ids
        self.queued = queued      # None, "ok", "after", "before", "bad"
        self.notes = notes        # words the Ids: line's note must hold
        self.sleep = sleep
        self.status = None

    def target(self):
        return "/sleep?s=%g&id=%s" % (self.sleep, self.name)

    def raw(self, port):
        head = b"GET " + self.target().encode() + b" HTTP/1.1\r\n"
        head += b"Host: 127.0.0.1:%d\r\nUser-Agent: slowdog-tests\r\n" % port
        for h, v in self.headers:
            head += h + b": " + v + b"\r\n"
        return head + b"Connection: close\r\n\r\n"


def cases(stamps):
    now = time.time()
    out = [Case("alone-%s" % h.decode().lower(), [(h, v)]) for h, v in IDS]
    out.append(Case("together", IDS + [(b"X-Tenant", b"acme")]))
    out.append(Case("repeated", [(b"X-Request-Id", b"first"), (b"x-request-id", b"second")],
                    notes=["x-request-id repeated, the first shown"]))
    out.append(Case("oversized", [(b"X-Correlation-Id", b"a" * 8192),
                                  (b"X-Request-Id", b"after-the-big-one")],
                    notes=["values over 160 bytes cut"]))
    out.append(Case("hostile", [(b"X-Request-Id", b"a\x01b\x7fc\xffd \"]\\[e=f g")]))
    out.append(Case("bad-traceparent", [(b"traceparent", b"00-xyz-\x02")],
                    ids={"traceparent": esc(b"00-xyz-\x02")},
                    notes=["traceparent is not W3C trace context"]))
    out.append(Case("many-big", [(h, (b"%d" % i) * 4000) for i, (h, _) in enumerate(IDS)],
                    ids=None, notes=["values over 160 bytes cut", "more than fit"]))
    if stamps:
        q = now - 0.25
        forms = [
            ("nginx", b"X-Request-Start", b"t=%.3f" % q),
            ("heroku", b"X-Request-Start", b"%d" % (q * 1e3)),
            ("haproxy", b"X-Request-Start", b"t=%d" % (q * 1e3)),
            ("newrelic-us", b"X-Request-Start", b"t=%d" % (q * 1e6)),
            ("queue-start", b"X-Queue-Start", b"t=%d" % (q * 1e6)),
            ("seconds", b"X-Request-Start", b"%d" % (q - 0.5)),
        ]
        for name, h, v in forms:
            out.append(Case("stamp-" + name, [(h, v)], queued="ok"))
        out.append(Case("stamp-future", [(b"X-Request-Start", b"t=%.3f" % (now + 30))],
                        queued="after"))
        out.append(Case("stamp-absurd", [(b"X-Request-Start", b"t=1000000000.000")],
                        queued="before"))
        out.append(Case("stamp-garbage", [(b"X-Request-Start", b"t=soon\x01")],
                        queued="bad"))
    return out


# ---------------------------------------------------------------- servers

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
%(user)s
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    large_client_header_buffers 8 64k;
    client_body_temp_path %(tmp)s/client_body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            %(pass)s
        }
    }
}
"""


def gunicorn(port):
    return ["/usr/bin/gunicorn", "--chdir", APP_DIR, "-b", "127.0.0.1:%d" % port,
            "-w", "1", "-k", "gthread", "--threads", "32", "--timeout", "60",
            "--limit-request-field_size", "0", "--limit-request-fields", "200",
            "app:app"]


def uwsgi(listen):
    return [harness.which("uwsgi"), "--plugin", "python3"] + listen + [
        "--master", "--processes", "1", "--threads", "32",
        "--wsgi-file", os.path.join(APP_DIR, "app.py"), "--callable", "app",
        "--chdir", APP_DIR, "--need-app", "--die-on-term", "--disable-logging",
        "--buffer-size", "65535"]


class Setup(object):
    """A server (and nginx in front when front is given) with the library."""

    def __init__(self, name, tmp, kind, fmt="text", env=None, stamps=True):
        self.name = name
        self.tmp = os.path.join(tmp, name)
        os.mkdir(self.tmp)
        self.kind = kind
        self.fmt = fmt
        self.stamps = stamps
        self.log = os.path.join(self.tmp, "slow.log")
        self.env = harness.env(LIB, self.log, "500ms", SLOWDOG_FORMAT=fmt,
                               SLOWDOG_HEADERS="X-Tenant", **(env or {}))
        self.procs = []

    def start(self):
        port = harness.free_port()
        up = harness.free_port()
        if self.kind == "gunicorn":
            self.procs.append(harness.Server(gunicorn(port), self.env,
                                             os.path.join(self.tmp, "out"), port=port))
            self.port = port
            return
        if self.kind == "uwsgi-http":
            self.procs.append(harness.Server(uwsgi(["--http-socket", "127.0.0.1:%d" % port]),
                                             self.env, os.path.join(self.tmp, "out"),
                                             port=port))
            self.port = port
            return
        if self.kind == "uwsgi-nginx":
            self.procs.append(harness.Server(uwsgi(["--socket", "127.0.0.1:%d" % up]),
                                             self.env, os.path.join(self.tmp, "out"),
                                             port=up))
            pas = ("include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:%d; "
                   "uwsgi_read_timeout 60s;" % up)
        else:  # nginx-proxy: nginx stamps the request
            self.procs.append(harness.Server(gunicorn(up), self.env,
                                             os.path.join(self.tmp, "out"), port=up))
            pas = ("proxy_pass http://127.0.0.1:%d; proxy_http_version 1.1; "
                   "proxy_set_header Connection \"\"; "
                   "proxy_set_header X-Request-Start \"t=${msec}\"; "
                   "proxy_read_timeout 60s;" % up)
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"tmp": self.tmp, "port": port, "pass": pas,
                                  "user": "user root;" if os.geteuid() == 0 else ""})
        self.procs.append(harness.Server(
            [harness.which("nginx"), "-p", self.tmp, "-c", conf, "-e",
             os.path.join(self.tmp, "nginx-error.log")],
            harness.env(), os.path.join(self.tmp, "nginx.out"), port=port))
        self.port = port

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def send(port, data, timeout=30):
    out = harness.send(port, data, timeout)
    m = re.match(rb"HTTP/1\.[01] (\d+)", out)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- checks

def json_ids(req):
    out = {}
    for k, v in req["ids"].items():
        if k == "traceparent" and v.get("valid"):
            out["trace-id"] = v["trace_id"]
            out["span-id"] = v["span_id"]
        else:
            out[k] = v["value"]
    return out


def records(setup):
    """{case name: (report, finished)} with report and finished as dicts:
    ids, notes, queued (text), running, or the JSON objects."""
    text = harness.read_log(setup.log)
    out = {}
    if setup.fmt == "json":
        for n, line in enumerate(text.splitlines()):
            try:
                o = json.loads(line)
            except ValueError as e:
                check("%s: JSON line %d parses" % (setup.name, n + 1), False, e)
                continue
            m = re.search(r"id=([\w.-]+)$", o["request"]["target"] or "")
            if m:
                out.setdefault(m.group(1), {})[o["type"]] = o
        return out
    reports, finished, errors = slowlog.parse(text)
    check("%s: the log parses" % setup.name, not errors, errors[:5])
    for r in reports:
        m = re.search(r"id=([\w.-]+)$", r.request or "")
        if m:
            out.setdefault(m.group(1), {})["report"] = r
    for f in finished:
        m = re.search(r"id=([\w.-]+)$", f.request or "")
        if m:
            out.setdefault(m.group(1), {})["finished"] = f
    return out


def expect_queued(c, line, name):
    if c.queued is None:
        check(name + ": no Queued line", line is None, line)
        return
    m = slowlog.QUEUED_RE.match(line or "")
    if not m:
        check(name + ": Queued line", False, line)
        return
    if c.queued == "ok":
        q = float(m.group(1) or -1)
        check(name + ": queued about 0.25 s (or 0.75 s in seconds)",
              0.2 <= q <= 5.0, line)
    elif c.queued == "bad":
        check(name + ": stamp not a time", "is not a time stamp" in line, line)
    else:
        check(name + ": stamp %s the first read" % c.queued, m.group(7) == c.queued, line)


def check_setup(setup, cs):
    recs = records(setup)
    for c in cs:
        name = "%s %s" % (setup.name, c.name)
        if c.status != 200:
            # nginx refuses some bytes a server takes: say so, and
            # require that such a request left no trace either
            check(name + ": refused (%s) and not reported" % c.status,
                  c.name in ("hostile", "bad-traceparent", "stamp-garbage")
                  and c.name not in recs, (c.status, recs.get(c.name)))
            continue
        rec = recs.get(c.name, {})
        rep, fin = rec.get("report"), rec.get("finished")
        if not check(name + ": reported and finished", rep is not None and fin is not None,
                     rec) and (rep is None or fin is None):
            continue
        if setup.fmt == "json":
            got = json_ids(rep["request"])
            fgot = json_ids(fin["request"])
            queue = rep.get("queue")
        else:
            got = rep.ids
            fgot = fin.ids
            queue = rep.fields.get("Queued")
        want = c.ids
        if c.name == "many-big":
            # the first ones, cut; the rest left out
            ok = (list(want)[:len(got)] == list(got) and 2 <= len(got) < len(want) and
                  all(v.endswith("...") for v in got.values()))
            check(name + ": the first values cut, the rest left out", ok, got)
        else:
            check(name + ": report shows the ids as sent", got == want,
                  "got %r want %r" % (got, want))
        check(name + ": finished line carries the same ids", fgot == got,
              "%r vs %r" % (fgot, got))
        if setup.fmt == "json":
            if c.queued is None:
                check(name + ": queue is null", queue is None, queue)
            else:
                ok = {"ok": queue and queue["queued_s"] is not None and
                      0.2 <= queue["queued_s"] <= 5.0,
                      "after": queue and queue["problem"] == "in the future",
                      "before": queue and queue["problem"] == "too old",
                      "bad": queue and queue["problem"] == "not a time stamp"}[c.queued]
                check(name + ": queue says %s" % c.queued, ok, queue)
            for note in c.notes:
                flag = {"x-request-id repeated, the first shown": ("x-request-id", "repeated"),
                        "values over 160 bytes cut": (None, "truncated"),
                        "traceparent is not W3C trace context": ("traceparent", "valid"),
                        "more than fit": (None, "dropped")}[note]
                ids = rep["request"]["ids"]
                if flag[1] == "dropped":
                    ok = rep["request"]["ids_dropped"] is True
                elif flag[0]:
                    ok = ids[flag[0]][flag[1]] is (flag[1] != "valid")
                else:
                    ok = any(v["truncated"] for v in ids.values())
                check(name + ": JSON says " + note, ok, ids)
        else:
            if setup.kind != "nginx-proxy":   # nginx stamps them all
                expect_queued(c, queue, name)
            m = slowlog.IDS_RE.match(rep.fields.get("Ids", ""))
            notes = (m.group(2) or "") if m else ""
            for note in c.notes:
                check(name + ": Ids line says " + note, note in notes, rep.fields.get("Ids"))


def run_setup(setup):
    try:
        setup.start()
    except RuntimeError as e:
        check(setup.name + ": starts", False, e)
        return
    cs = cases(setup.stamps)
    try:
        def one(c):
            c.status = send(setup.port, c.raw(setup.port))
        harness.at_once(one, cs)
        # the finished lines follow the responses within moments
        harness.wait_for(lambda: len(re.findall(r"finished", harness.read_log(setup.log))) >=
                         sum(1 for c in cs if c.status == 200), 10)
    finally:
        setup.stop()
    check_setup(setup, cs)


def proxy_stamps(setup):
    """gunicorn behind nginx: nginx's own stamp, on every request."""
    if setup.fmt != "text":
        return
    reports, _, _ = slowlog.parse(harness.read_log(setup.log))
    qs = [r.fields.get("Queued", "") for r in reports]
    ok = [q for q in qs if re.match(r"^\d+\.\d{3} s before the worker read it "
                                    r"\(x-request-start: t=\d+\.\d{3}\)$", q)]
    check("%s: nginx's stamp read on every report" % setup.name,
          reports and len(ok) == len(reports), qs)


# ---------------------------------------------------------------- count

def test_count(tmp):
    """SLOWDOG_QUEUE=count: a request that waited 0.6 s before its first
    read is due 0.6 s sooner; an absurd stamp counts from the first read;
    no stamp, as before."""
    s = Setup("queue-count", tmp, "gunicorn", "json",
              {"SLOWDOG_QUEUE": "count", "SLOWDOG_THRESHOLD": "1s"})
    s.start()
    now = time.time()
    cs = [Case("waited", [(b"X-Request-Start", b"t=%.3f" % (now - 0.6))], sleep=0.8),
          Case("absurd", [(b"X-Request-Start", b"t=1000000000")], sleep=1.5),
          Case("future", [(b"X-Request-Start", b"t=%.3f" % (now + 60))], sleep=0.8),
          Case("none", [], sleep=0.8)]
    try:
        harness.at_once(lambda c: setattr(c, "status", send(s.port, c.raw(s.port))), cs)
        harness.wait_for(lambda: len(re.findall(r"finished", harness.read_log(s.log))) >= 2, 10)
    finally:
        s.stop()
    recs = records(s)
    w = recs.get("waited", {}).get("report")
    check("count: a request that waited is reported before the threshold "
          "since its first read", w and w["running_s"] < 1.0 and w["queue"]["counted"],
          w and (w["running_s"], w["queue"]))
    a = recs.get("absurd", {}).get("report")
    check("count: an absurd stamp counts from the first read",
          a and a["running_s"] >= 1.0 and not a["queue"]["counted"] and
          a["queue"]["problem"] == "too old", a and (a["running_s"], a["queue"]))
    check("count: a stamp in the future is not counted, nor the request reported early",
          "future" not in recs, recs.get("future"))
    check("count: no stamp, no report under the threshold", "none" not in recs,
          recs.get("none"))
    check("count: every request answered", all(c.status == 200 for c in cs),
          [c.status for c in cs])


# ---------------------------------------------------------------- syslog

def test_syslog(tmp):
    """RFC 5424 over UDP: the ids are SD-PARAMs of [slowdog@32473 ...]."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    got = []
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            try:
                got.append(rx.recv(70000))
            except socket.timeout:
                pass
    th = threading.Thread(target=listen, daemon=True)
    th.start()
    s = Setup("syslog", tmp, "gunicorn",
              env={"SLOWDOG_LOG": "syslog://127.0.0.1:%d" % rx.getsockname()[1]})
    s.start()
    c = Case("sd", [(b"traceparent", TP), (b"X-Request-Id", b'q"u]o\\te'),
                    (b"X-Tenant", b"acme")])
    try:
        c.status = send(s.port, c.raw(s.port))
        harness.wait_for(lambda: any(b" finished " in d for d in got), 10)
    finally:
        s.stop()
        stop.set()
        th.join()
    msgs = [d.decode("utf-8", "replace") for d in got]
    sd_re = re.compile(r'^<\d+>1 \S+ \S+ slowdog \d+ (report|finished) '
                       r'\[slowdog@32473 request_id="(\d+-\d+)"'
                       r'((?: [^=\s\]"]+="(?:[^"\\\]]|\\.)*")*)\] ')
    parsed = [sd_re.match(m) for m in msgs]
    check("syslog: every datagram has the structured data", msgs and all(parsed),
          [m[:300] for m in msgs])
    for m in [p for p in parsed if p]:
        params = dict((k, re.sub(r'\\(.)', r'\1', v)) for k, v in
                      re.findall(r' ([^=\s]+)="((?:[^"\\]|\\.)*)"', m.group(3)))
        check("syslog: %s carries the ids" % m.group(1), params == {
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "x-request-id": esc(b'q"u]o\\te'), "x-tenant": "acme"}, params)


def main():
    for prog in ("/usr/bin/gunicorn", harness.which("uwsgi"), harness.which("nginx")):
        if not prog or not os.path.exists(prog):
            print("SKIP: needs gunicorn, uwsgi and nginx")
            return 0
    with tempfile.TemporaryDirectory() as tmp:
        setups = [Setup("gunicorn", tmp, "gunicorn"),
                  Setup("uwsgi-http", tmp, "uwsgi-http"),
                  Setup("uwsgi-nginx", tmp, "uwsgi-nginx", "json"),
                  Setup("nginx-proxy", tmp, "nginx-proxy", stamps=False)]
        for t in harness.start_threads(run_setup, setups):
            t.join()
        proxy_stamps(setups[3])
        ts = harness.start_threads(lambda f: f(tmp), [test_count, test_syslog])
        for t in ts:
            t.join()
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

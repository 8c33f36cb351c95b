#!/usr/bin/python3
"""scripts/slowdog-top on logs from real runs.

Three servers (tests/integration/stdserver.py with tests/integration/app.py,
libslowdog.so preloaded, SLOWDOG_THRESHOLD=300ms) run at once: one writes
the text format (two batches of requests, for the time filters, and a
ctypes job labelled through slowdog_begin), one JSON lines, one the text
format with SLOWDOG_REPEAT=200ms and a request whose worker is killed
before it finishes. slowdog-top is then run on those logs, on mixtures of
them with damaged records and stray lines, through standard input, gzip,
split files, and under every CPython found.

usage: tests/top/test_top.py [BUILD_DIR]
"""
import gzip
import json
import os
import re
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
from harness import ROOT, slowlog  # noqa: E402  (slowlog: a cross-check)
LIB = harness.library()
APP = os.path.join(harness.INTEGRATION, "app.py")
TOP = os.path.join(ROOT, "scripts", "slowdog-top")

failures = []
passes = [0]


def check(name, cond, detail=""):
    if cond:
        passes[0] += 1
        print("PASS  %s" % name)
    else:
        failures.append(name)
        print("FAIL  %s: %s" % (name, str(detail)[:3000]))
    return cond


def app_line(func, text):
    """The line of `text` inside `def func` in app.py."""
    inside = False
    with open(APP) as f:
        for n, line in enumerate(f, 1):
            if line.startswith("def "):
                inside = line.startswith("def %s(" % func)
            elif inside and line.strip() == text:
                return n
    raise RuntimeError("%s: %r not found in %s" % (func, text, APP))


def func_lines(func):
    lines = set()
    inside = False
    with open(APP) as f:
        for n, line in enumerate(f, 1):
            if line.startswith("def "):
                inside = line.startswith("def %s(" % func)
            if inside:
                lines.add(n)
    return lines


SLEEP_LINE = app_line("slow_sleep", "time.sleep(s)")
CHILD_LINE = app_line("child_wait", 'r = subprocess.run(["sleep", str(s)])')
SPIN_LINES = func_lines("spin_loop")

# How much later than asked a request may end on a loaded machine.
LATE = 1.5


def top(args, stdin=None, python="/usr/bin/python3"):
    """Runs slowdog-top; returns (status, stdout, stderr)."""
    p = subprocess.run([python, TOP] + args, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def top_json(args, **kw):
    rc, out, err = top(["--json", "--top", "0"] + args, **kw)
    try:
        return rc, json.loads(out), err
    except ValueError:
        return rc, None, "%s\n%s" % (out, err)


def endpoints(summary):
    return {e["endpoint"]: e for e in summary["endpoints"]} if summary else {}


def frames(summary):
    return {f["frame"]: f for f in summary["frames"]} if summary else {}


def app_frame_count(summary, func, lines):
    n = 0
    for f in summary["frames"] if summary else []:
        if f["file"] == APP and f["function"] == func and f["line"] in lines:
            n += f["count"]
    return n


# ---- the servers ----

class Server(harness.Server):
    def __init__(self, tmp, name, env):
        harness.Server.__init__(
            self, [harness.PY, harness.STDSERVER, "PORT", "app:app"],
            harness.env(LIB, os.path.join(tmp, name + ".log"), "300ms", **env),
            os.path.join(tmp, name + ".err"), stdout="null")

    def start(self, paths):
        """Sends the requests at once; returns the threads."""
        def get(path):
            try:
                self.get(path, 60)
            except Exception:
                pass            # the killed request
        return harness.start_threads(get, paths)

    def batch(self, paths):
        for t in self.start(paths):
            t.join()


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (
        int((t - int(t)) * 1000))


JOB = r"""
import ctypes, sys, time
lib = ctypes.CDLL(None)
lib.slowdog_begin.argtypes = [ctypes.c_char_p]
def nightly_job():
    lib.slowdog_begin(b"job nightly")
    time.sleep(float(sys.argv[1]))
    lib.slowdog_end()
nightly_job()
"""


def run_text(tmp, out):
    srv = Server(tmp, "text", {})
    job_py = os.path.join(tmp, "job.py")
    with open(job_py, "w") as f:
        f.write(JOB)
    job = subprocess.Popen(["/usr/bin/python3", job_py, "0.7"], env=srv.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.batch(["/sleep?s=1.0&id=a1", "/sleep?s=0.6&id=a2", "/spin?s=0.8&id=a3",
               "/deep?n=8&s=0.7&id=a4", "/child?s=0.7&id=a5", "/fast?id=a6"])
    job.wait(30)
    # Finished lines are written within moments of the last byte.
    time.sleep(0.3)
    out["cutoff"] = time.time()
    time.sleep(0.3)
    srv.batch(["/sleep?s=0.5&id=b1", "/deep?n=4&s=0.9&id=b2"])
    time.sleep(0.3)
    srv.stop()
    out["text"] = srv.log


def run_json(tmp, out):
    srv = Server(tmp, "json", {"SLOWDOG_FORMAT": "json"})
    srv.batch(["/sleep?s=0.8&id=j1", "/spin?s=0.6&id=j2", "/deep?n=5&s=0.7&id=j3",
               "/child?s=0.6&id=j4", "/fast?id=j5"])
    time.sleep(0.3)
    srv.stop()
    out["json"] = srv.log


def run_repeat(tmp, out):
    srv = Server(tmp, "repeat", {"SLOWDOG_REPEAT": "200ms"})
    killed = srv.start(["/deep?n=3&s=30&id=r3"])
    srv.batch(["/sleep?s=1.2&id=r1", "/spin?s=0.9&id=r2"])
    # The long request: wait for its last capture (SLOWDOG_REPEAT_MAX is 5),
    # then kill the server under it, so that it never finishes.
    harness.wait_for(lambda: srv.logtext().count("Repeat:     5") >= 2, 10, 0.1)
    time.sleep(0.3)
    srv.stop(sig=signal.SIGKILL)
    del killed
    out["repeat"] = srv.log


# ---- the checks ----

def near(got, want):
    return got is not None and want - 0.05 <= got <= want + LATE


def check_summary(name, s, want, rtext):
    """want: endpoint -> (requests, finished, longest asked duration)."""
    eps = endpoints(s)
    check("%s: endpoints are %s" % (name, sorted(want)),
          sorted(eps) == sorted(want), sorted(eps))
    for ep, (n, fin, longest) in sorted(want.items()):
        e = eps.get(ep)
        if not e:
            continue
        check("%s: %s counts %d requests, %d finished" % (name, ep, n, fin),
              e["requests"] == n and e["finished"] == fin, e)
        check("%s: %s max %.3f s is close to %.1f s" % (name, ep, e["max_s"], longest),
              near(e["max_s"], longest), e)
    order = [e["endpoint"] for e in s["endpoints"]]
    totals = [e["total_s"] for e in s["endpoints"]]
    check("%s: endpoints sorted by total duration" % name,
          totals == sorted(totals, reverse=True), list(zip(order, totals)))
    # The strict parser's view of the same text log.
    if rtext is not None:
        reports, finished, errors = slowlog.parse(rtext)
        check("%s: as many reports and finished lines as slowlog.py reads" % name,
              not errors and s["reports"] == len(reports)
              and s["finished"] == len(finished),
              (s["reports"], s["finished"], len(reports), len(finished), errors[:3]))


def test_text(logs):
    log = logs["text"]
    text = open(log).read()
    rc, s, err = top_json([log])
    if not check("text log: slowdog-top --json runs", rc == 0 and s and not err, err):
        return
    check_summary("text log", s, {
        "GET /sleep": (3, 3, 1.0), "GET /spin": (1, 1, 0.8),
        "GET /deep": (2, 2, 0.9), "GET /child": (1, 1, 0.7),
        "job nightly": (1, 1, 0.7)}, text)
    e = endpoints(s).get("job nightly") or {}
    check("text log: explicit work grouped by its label",
          e.get("label") == "job nightly" and e.get("method") is None, e)
    f = frames(s)
    sleep = "%s:%d slow_sleep" % (APP, SLEEP_LINE)
    check("text log: %d captures in slow_sleep (3 /sleep, 2 /deep)" % 5,
          f.get(sleep, {}).get("count") == 5, sorted(f))
    check("text log: the frame is split into file, line, function",
          f.get(sleep, {}).get("line") == SLEEP_LINE
          and f.get(sleep, {}).get("function") == "slow_sleep", f.get(sleep))
    check("text log: /child's innermost application frame is child_wait, not subprocess",
          f.get("%s:%d child_wait" % (APP, CHILD_LINE), {}).get("count") == 1, sorted(f))
    check("text log: /spin's innermost frame is in spin_loop",
          app_frame_count(s, "spin_loop", SPIN_LINES) == 1, sorted(f))
    job_line = JOB.split("\n").index("    time.sleep(float(sys.argv[1]))") + 1
    check("text log: the job's innermost frame is job.py:%d nightly_job" % job_line,
          any(k.endswith("/job.py:%d nightly_job" % job_line) for k in f), sorted(f))
    check("text log: no frame from the standard library",
          not any("/usr/lib/python3" in k for k in f), sorted(f))

    rc, out, err = top([log])
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^ *(\d+) +(\d+) +(\d+) +(\d+\.\d{3}) +(\d+\.\d{3})  (.+)$", line)
        if m:
            rows[m.group(6)] = m.groups()[:5]
    check("text output: a row per endpoint with requests, reports, finished",
          rows.get("GET /sleep", ())[:3] == ("3", "3", "3")
          and rows.get("GET /deep", ())[:3] == ("2", "2", "2"), out)
    check("text output: first line counts 8 slow requests",
          out.startswith("8 slow requests (8 reports, 8 finished)"), out[:200])
    check("text output: frames table shows app.py:%d slow_sleep" % SLEEP_LINE,
          re.search(r"(?m)^ +5  %s$" % re.escape(sleep), out), out)

    # --top
    rc, out, err = top(["--top", "1", log])
    check("--top 1: one row per table and a line saying how many more",
          "(4 more endpoints; --top 0 shows all)" in out
          and "GET /sleep" in out and "GET /spin" not in out, out)


def test_json(logs):
    log = logs["json"]
    rc, s, err = top_json([log])
    if not check("JSON log: slowdog-top --json runs", rc == 0 and s and not err, err):
        return
    check_summary("JSON log", s, {
        "GET /sleep": (1, 1, 0.8), "GET /spin": (1, 1, 0.6),
        "GET /deep": (1, 1, 0.7), "GET /child": (1, 1, 0.6)}, None)
    objs = [json.loads(x) for x in open(log)]
    check("JSON log: reports and finished objects all counted",
          s["reports"] == sum(o["type"] == "report" for o in objs)
          and s["finished"] == sum(o["type"] == "finished" for o in objs), s)
    f = frames(s)
    check("JSON log: 2 captures in app.py:%d slow_sleep" % SLEEP_LINE,
          f.get("%s:%d slow_sleep" % (APP, SLEEP_LINE), {}).get("count") == 2, sorted(f))
    check("JSON log: child_wait", f.get("%s:%d child_wait" % (APP, CHILD_LINE),
                                        {}).get("count") == 1, sorted(f))


def test_repeat(logs):
    log = logs["repeat"]
    text = open(log).read()
    reports, finished, errors = slowlog.parse(text)
    rc, s, err = top_json([log])
    if not check("repeat log: slowdog-top --json runs", rc == 0 and s and not err, err):
        return
    eps = endpoints(s)
    by = {}
    for r in reports:
        by.setdefault(r.request.split("?")[0], []).append(r)
    for ep in ("GET /sleep", "GET /spin", "GET /deep"):
        e = eps.get(ep, {})
        n = len(by.get(ep, []))
        check("repeat log: %s is one request with its %d captures" % (ep, n),
              e.get("requests") == 1 and e.get("reports") == n and n >= 3, (e, n))
    check("repeat log: /sleep max close to 1.2 s",
          near(eps.get("GET /sleep", {}).get("max_s"), 1.2), eps.get("GET /sleep"))
    deep = eps.get("GET /deep", {})
    last = max((r.running for r in by.get("GET /deep", [])), default=None)
    check("repeat log: the killed /deep has no finished line and takes the running "
          "time of its last capture (%s s)" % last,
          deep.get("finished") == 0 and last is not None
          and abs(deep.get("max_s", -1) - last) < 0.0005
          and abs(deep.get("total_s", -1) - last) < 0.0005, deep)
    sleep = "%s:%d slow_sleep" % (APP, SLEEP_LINE)
    want = len(by.get("GET /sleep", [])) + len(by.get("GET /deep", []))
    check("repeat log: every capture counts in the frames table (%d)" % want,
          frames(s).get(sleep, {}).get("count") == want, s["frames"])
    rc, s2, err = top_json(["--per-request", log])
    check("repeat log: --per-request counts requests (2 in slow_sleep)",
          s2 and frames(s2).get(sleep, {}).get("count") == 2
          and s2["frames_count"] == "requests", s2 and s2["frames"])
    rc, out, err = top(["--folded", log])
    total = sum(int(x.rsplit(" ", 1)[1]) for x in out.splitlines())
    check("repeat log: --folded counts every capture (%d)" % len(reports),
          total == len(reports), out)
    rc, out, err = top(["--folded", "--per-request", log])
    total = sum(int(x.rsplit(" ", 1)[1]) for x in out.splitlines())
    check("repeat log: --folded --per-request counts each request once",
          total == 3, out)


FOLDED_RE = re.compile(r"^([^;\n]+(?:;[^;\n]+)*) (\d+)$")


def folded_stacks(out):
    stacks = []
    for line in out.splitlines():
        m = FOLDED_RE.match(line)
        if not m:
            return None, line
        stacks.append((m.group(1).split(";"), int(m.group(2))))
    return stacks, None


def test_folded(logs):
    per_log = {}
    for kind in ("text", "json"):
        log = logs[kind]
        rc, out, err = top(["--folded", log])
        stacks, bad = folded_stacks(out)
        if not check("%s log --folded: every line is 'frame;frame;... count'" % kind,
                     rc == 0 and stacks and bad is None and not err, (bad, err, out[:500])):
            continue
        rc, s, err = top_json([log])
        check("%s log --folded: the counts add up to the captures" % kind,
              sum(n for _, n in stacks) == s["reports"], (stacks, s["reports"]))
        threads = [st for st, _ in stacks if st[0].startswith("_bootstrap (")]
        check("%s log --folded: root first (threading _bootstrap)" % kind,
              threads and all(re.match(r"^_bootstrap \(/.*/threading\.py:\d+\)$", st[0])
                              for st in threads), stacks)
        sleep_frame = "slow_sleep (%s:%d)" % (APP, SLEEP_LINE)
        sleeps = [(st, n) for st, n in stacks if sleep_frame in st]

        def native_below(st):
            below = st[st.index(sleep_frame) + 1:]
            return below and below[-1] == "clock_nanosleep" and all(
                x.startswith("?? (") or not x.endswith(")") for x in below)
        check("%s log --folded: slow_sleep stacks go on with native frames down to "
              "clock_nanosleep" % kind,
              sum(n for _, n in sleeps) == (5 if kind == "text" else 2)
              and all(native_below(st) for st, _ in sleeps), sleeps)
        n = 8 if kind == "text" else 5
        deep = [st for st in threads if sum(x.startswith("recurse (") for x in st) == n]
        check("%s log --folded: the /deep?n=%d stack has %d recurse frames" % (kind, n, n),
              len(deep) == 1, [sum(x.startswith("recurse (") for x in st) for st in threads])
        child = [st for st in threads
                 if "child_wait (%s:%d)" % (APP, CHILD_LINE) in st]
        check("%s log --folded: /child goes through subprocess down to waitpid" % kind,
              len(child) == 1 and child[0][-1] == "waitpid"
              and any("subprocess.py" in x for x in child[0]), child)
        job = [st for st, _ in stacks if any(x.startswith("nightly_job (") for x in st)]
        if kind == "text":
            check("text log --folded: the job's stack starts at <module>",
                  len(job) == 1 and job[0][0].startswith("<module> ("), job)
        per_log[kind] = {tuple(st) for st, _ in sleeps}
    # The same code blocked in the same call gives the same stack, whichever
    # format the log was written in.
    if "text" in per_log and "json" in per_log:
        common = per_log["text"] & per_log["json"]
        check("--folded: text and JSON logs give identical slow_sleep stacks",
              common, (per_log["text"], per_log["json"]))


def test_filters(logs):
    log = logs["text"]
    rc, s, err = top_json(["--path", "/sleep", log])
    check("--path /sleep: only GET /sleep", s and sorted(endpoints(s)) == ["GET /sleep"]
          and endpoints(s)["GET /sleep"]["requests"] == 3, s)
    check("--path /sleep: frames of /sleep only",
          s and list(frames(s)) == ["%s:%d slow_sleep" % (APP, SLEEP_LINE)]
          and s["frames"][0]["count"] == 3, s and s["frames"])
    rc, s, err = top_json(["--path", "/s*", log])
    check("--path '/s*': /sleep and /spin", s and sorted(endpoints(s)) ==
          ["GET /sleep", "GET /spin"], s and sorted(endpoints(s)))
    rc, s, err = top_json(["--path", "/child", "--path", "job *", log])
    check("--path twice, one matching a label", s and sorted(endpoints(s)) ==
          ["GET /child", "job nightly"], s and sorted(endpoints(s)))
    rc, out, err = top(["--path", "/nothing", log])
    check("--path with no match says so", rc == 0 and out == "no slow requests match\n",
          out + err)
    rc, out, err = top(["--folded", "--path", "/deep", log])
    stacks, _ = folded_stacks(out)
    check("--folded --path /deep: only the two /deep stacks",
          stacks and len(stacks) == 2 and all(any(x.startswith("recurse (") for x in st)
                                              for st, _ in stacks), out)

    cut = logs["cutoff"]
    rc, s, err = top_json(["--since", iso(cut), log])
    check("--since (between the batches): the second batch only",
          s and {k: v["requests"] for k, v in endpoints(s).items()}
          == {"GET /sleep": 1, "GET /deep": 1} and s["finished"] == 2, s)
    rc, s, err = top_json(["--until", iso(cut), log])
    check("--until (between the batches): the first batch only",
          s and {k: v["requests"] for k, v in endpoints(s).items()}
          == {"GET /sleep": 2, "GET /deep": 1, "GET /spin": 1, "GET /child": 1,
              "job nightly": 1} and s["finished"] == 6, s)
    # The same instant written in another zone.
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut + 7200)) + ".%03d+02:00" % (
        int((cut - int(cut)) * 1000))
    rc, s2, err = top_json(["--since", local, log])
    check("--since with a +02:00 offset is the same instant",
          s2 and s and s2["requests"] == 2, (local, s2))
    rc, s, err = top_json(["--since", "1h", log])
    check("--since 1h: everything", s and s["requests"] == 8, s)
    rc, out, err = top(["--until", "1h", log])
    check("--until 1h: nothing", out == "no slow requests match\n", out)
    rc, out, err = top(["--since", "yesterday", log])
    check("a bad --since is a usage error", rc == 2 and "bad time" in err, (rc, err))


def split_records(text):
    """Records of a text log, each as its text, in order."""
    recs, cur = [], None
    for line in text.splitlines(True):
        if cur is not None:
            cur.append(line)
            if line.startswith("--- end of slowdog report "):
                recs.append("".join(cur))
                cur = None
        elif line.startswith(slowlog.BEGIN):
            cur = [line]
        elif line.strip():
            recs.append(line)
    return recs


def test_damaged(logs, tmp):
    text = open(logs["text"]).read()
    jlines = open(logs["json"]).read().splitlines(True)
    recs = split_records(text)
    # Drop the /child report, keep its finished line: a report rotated away.
    child = [r for r in recs if r.startswith(slowlog.BEGIN) and "GET /child" in r]
    recs.remove(child[0])
    block = [r for r in recs if r.startswith(slowlog.BEGIN)][0]
    cut = len(block) // 2
    while block[cut - 1] == "\n":
        cut -= 1
    big = jlines[0]
    parts = [
        "plain garbage from the server\n",     # stray line 1
        recs[0],
        block[:cut],                            # damaged 1: a report cut short,
        recs[1],                                # the next one right after it
        jlines[0],
        "\x00\x01\x02 binary \xff\n",          # stray line 2
        big[:len(big) // 2],                    # damaged 2: a JSON line cut short,
        jlines[1],                              # the next one right after it
        "slowdog: debug: watchdog started\n",   # slowdog's own message: ignored
        "slowdog: request 1-2 finished after soon: GET /x\n",   # damaged 3
        "x" * (5 << 20) + "\n",                 # stray line 3, longer than any record
        "progress 50%",                         # stray line 4: no newline ...
        recs[2],                                # ... before a text record
        "server says hi ",                      # stray line 5 ...
        jlines[2],                              # ... before a JSON line
    ]
    parts += recs[3:] + jlines[3:]
    mixed = os.path.join(tmp, "mixed.log")
    with open(mixed, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("".join(parts))
    rc, s, err = top_json([mixed])
    errs = err.strip().splitlines()
    check("damaged log: one line on stderr", len(errs) == 1, err)
    check("damaged log: 3 damaged records and 5 stray lines, the first at line 1",
          s and s["skipped_records"] == 3 and s["skipped_lines"] == 5
          and errs and errs[0] == "slowdog-top: skipped 3 damaged records and 5 lines "
          "that belong to no record (first at %s:1)" % mixed,
          (err, s and (s["skipped_records"], s["skipped_lines"])))
    rc1, a, _ = top_json([logs["text"]])
    rc2, b, _ = top_json([logs["json"]])
    want = {}
    for x in (a, b):
        for k, v in endpoints(x).items():
            w = want.setdefault(k, [0, 0, 0])
            w[0] += v["requests"]
            w[1] += v["reports"]
            w[2] += v["finished"]
    want["GET /child"][1] -= 1
    got = {k: [v["requests"], v["reports"], v["finished"]] for k, v in endpoints(s).items()}
    check("damaged log: text and JSON records both counted, nothing else",
          got == want, (got, want))
    check("damaged log: the finished line without its report still counts",
          s and s["finished_without_report"] == 1
          and s["finished"] == a["finished"] + b["finished"], s)
    # The same bytes through standard input, and as '-'.
    with open(mixed, "rb") as f:
        data = f.read()
    rc3, out_file, _ = top(["--top", "0", mixed])
    rc4, out_stdin, err_stdin = top(["--top", "0"], stdin=data)
    rc5, out_dash, _ = top(["--top", "0", "-"], stdin=data)
    check("standard input: same output as the file (no argument, and '-')",
          out_file and out_stdin == out_file and out_dash == out_file,
          (out_stdin, out_file))
    check("standard input: stderr names <stdin>", "(first at <stdin>:1)" in err_stdin,
          err_stdin)
    return mixed


def test_inputs(logs, tmp, mixed):
    log = logs["text"]
    rc, want, _ = top(["--top", "0", log])
    gz = os.path.join(tmp, "text.log.gz")
    with open(log, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    rc, out, err = top(["--top", "0", gz])
    check("a gzip file reads as the log", rc == 0 and out == want and not err, out + err)
    # A compressed log cut short: what could be read counts.
    cut = os.path.join(tmp, "cut.log.gz")
    data = gzip.compress(open(log, "rb").read() * 20)
    with open(cut, "wb") as f:
        f.write(data[:len(data) * 3 // 4])
    rc, s, err = top_json([cut])
    check("a gzip file cut short: status 1, a message, the records before the cut",
          rc == 1 and "cut.log.gz" in err and s and s["requests"] > 8, (rc, err, s))
    # Rotation between a report and its finished line.
    text = open(log).read()
    at = text.index("--- end of slowdog report ")
    at = text.index("\n", at) + 1
    one, two = os.path.join(tmp, "part.1"), os.path.join(tmp, "part.2")
    with open(one, "w") as f:
        f.write(text[:at])
    with open(two, "w") as f:
        f.write(text[at:])
    rc, out, err = top(["--top", "0", one, two])
    check("a log split in two files between a report and its finished line",
          out == want and not err, out + err)
    rc, out, err = top([os.path.join(tmp, "missing.log"), log])
    check("a missing file: status 1, one message, the others still read",
          rc == 1 and "missing.log" in err and out == top([log])[1], (rc, err))
    rc, out, err = top(["--folded", log])
    rc2, out2, _ = top(["--folded"], stdin=open(log, "rb").read())
    check("--folded from standard input", out == out2 and out, out2)

    # Every interpreter gives the same answer.
    root = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout.decode().strip() \
        if shutil_which("pyenv") else os.path.expanduser("~/.pyenv")
    rc, ref, _ = top(["--json", mixed])
    rcf, reff, _ = top(["--folded", mixed])
    seen = []
    for v in ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13"):
        vdir = os.path.join(root, "versions")
        cands = sorted(d for d in (os.listdir(vdir) if os.path.isdir(vdir) else [])
                       if d == v or d.startswith(v + "."))
        for d in cands[-1:]:
            py = os.path.join(vdir, d, "bin", "python" + v)
            if not os.access(py, os.X_OK):
                continue
            seen.append(d)
            rc, out, err = top(["--json", mixed], python=py)
            rc2, outf, _ = top(["--folded", mixed], python=py)
            check("Python %s: same --json and --folded output as /usr/bin/python3" % d,
                  out == ref and outf == reff, err[-500:])
    print("      (interpreters: %s)" % (", ".join(seen) or "none found"))


def shutil_which(name):
    import shutil
    return shutil.which(name)


def main():
    if not os.path.exists(LIB):
        print("FAIL  %s does not exist (build first)" % LIB)
        return 1
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sd-top.") as tmp:
        logs = {}
        runs = [threading.Thread(target=f, args=(tmp, logs))
                for f in (run_text, run_json, run_repeat)]
        for t in runs:
            t.start()
        for t in runs:
            t.join()
        print("      (servers ran for %.1f s)" % (time.time() - t0))
        if not check("three real runs left three logs",
                     all(k in logs and os.path.getsize(logs[k]) > 0
                         for k in ("text", "json", "repeat")), logs):
            return 1
        test_text(logs)
        test_json(logs)
        test_repeat(logs)
        test_folded(logs)
        test_filters(logs)
        mixed = test_damaged(logs, tmp)
        test_inputs(logs, tmp, mixed)
        if failures and os.environ.get("SLOWDOG_KEEP"):
            keep = tempfile.mkdtemp(prefix="sd-top-keep.")
            for k in ("text", "json", "repeat"):
                subprocess.run(["cp", logs[k], keep])
            print("      logs kept in %s" % keep)
    print("%d passed, %d failed (%.1f s)" % (passes[0], len(failures), time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

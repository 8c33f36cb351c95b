#!/usr/bin/python3
"""Settings end to end: JSON lines (every line of a real run parsed and
checked against the schema in slowdog(7)), SLOWDOG_REPEAT and
SLOWDOG_REPEAT_MAX, SLOWDOG_IGNORE, SLOWDOG_QUERY=strip, SLOWDOG_DEBUG.

usage: tests/settings/run.py [BUILD_DIR]
"""
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
LIB = harness.library()
failures = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("ok  " if cond else "FAIL", name,
                       "" if cond else ": " + str(detail)[:1500]))
    if not cond:
        failures.append(name)


def serve(env, tmp, requests):
    """Starts stdserver.py with the library, makes the requests (all at
    once), stops it; returns (log text, stderr text, bodies)."""
    srv = harness.Server([harness.PY, harness.STDSERVER, "PORT", "app:app"],
                         harness.env(LIB, os.path.join(tmp, "slow.log"), "400ms", **env),
                         os.path.join(tmp, "err"), stdout="null")
    try:
        bodies = dict(zip(requests, harness.at_once(
            lambda path: harness.get(srv.port, path, 30), requests)))
        # finished lines are written within moments of the responses
        time.sleep(0.5)
    finally:
        err = srv.stop()
    # strict: the log must be UTF-8
    return srv.logbytes().decode("utf-8"), err, bodies


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def typed(v, t):
    return v is None if t is None else isinstance(v, t) and not (
        t is int and isinstance(v, bool))


def check_schema(obj):
    """Problems with one JSON object against slowdog(7)'s schema."""
    bad = []

    def need(d, key, *types):
        if key not in d:
            bad.append("missing " + key)
            return None
        if not any(typed(d[key], t) for t in types):
            bad.append("%s has type %s" % (key, type(d[key]).__name__))
        return d[key]
    need(obj, "schema", int)
    if obj.get("schema") != 1:
        bad.append("schema is not 1")
    kind = need(obj, "type", str)
    time_ = need(obj, "time", str)
    if isinstance(time_, str) and not ISO.match(time_):
        bad.append("time " + time_)
    rid = need(obj, "request_id", str)
    if isinstance(rid, str) and not re.match(r"^\d+-\d+$", rid):
        bad.append("request_id " + rid)
    req = need(obj, "request", dict) or {}
    for k in ("method", "target", "host", "protocol", "label"):
        need(req, k, str, None)
    if kind == "finished":
        need(obj, "pid", int)
        need(obj, "duration_s", float, int)
        return bad
    if kind != "report":
        return bad + ["type " + str(kind)]
    need(obj, "repeat", int)
    proc = need(obj, "process", dict) or {}
    need(proc, "pid", int)
    need(proc, "ppid", int)
    need(proc, "cmdline", str)
    th = need(obj, "thread", dict) or {}
    need(th, "tid", int)
    need(th, "name", str)
    st = need(obj, "started", str)
    if isinstance(st, str) and not ISO.match(st):
        bad.append("started " + st)
    need(obj, "running_s", float, int)
    need(obj, "threshold_s", float, int)
    cap = need(obj, "capture", dict) or {}
    mode = need(cap, "mode", str)
    if mode not in ("blocked", "syscall", "signal", "failed"):
        bad.append("capture.mode " + str(mode))
    need(cap, "call", str, None)
    need(cap, "pause_us", float, int, None)
    need(cap, "error", str, None)
    gil = need(obj, "gil", dict, None)
    if gil is not None:
        need(gil, "waiting", bool)
        need(gil, "unknown", str, None)
        h = need(gil, "holder", dict, None)
        if h is not None:
            need(h, "tid", int)
            need(h, "name", str)
            need(h, "main_thread", bool)
            need(h, "event_loop", bool)
            need(h, "request_id", str, None)
            need(h, "request", dict, None)
            need(h, "running_s", float, int, None)
            hp = need(h, "python", dict, None)
            if hp is not None:
                for f in need(hp, "frames", list) or []:
                    need(f, "file", str)
                    need(f, "line", int, None)
                    need(f, "function", str, None)
                need(hp, "total", int)
                need(hp, "damaged", bool)
    py = need(obj, "python", dict) or {}
    need(py, "version", str, None)
    need(py, "unavailable", str, None)
    need(py, "untested", str, None)
    frames = need(py, "frames", list) or []
    for f in frames:
        need(f, "file", str)
        need(f, "line", int, None)
        need(f, "function", str, None)
        need(f, "source", str, None)
    need(py, "omitted", int)
    need(py, "omitted_after", int)
    need(py, "damaged", bool)
    nat = need(obj, "native", dict) or {}
    for f in need(nat, "frames", list) or []:
        a = need(f, "address", str)
        if isinstance(a, str) and not re.match(r"^0x[0-9a-f]{16}$", a):
            bad.append("address " + a)
        need(f, "symbol", str, None)
        need(f, "offset", int, None)
        need(f, "object", str, None)
        need(f, "object_offset", int, None)
    need(nat, "truncated", bool)
    for w in need(nat, "without_symbols", list) or []:
        need(w, "object", str)
        need(w, "build_id", str, None)
        need(w, "help", str)
    return bad


def test_json():
    with tempfile.TemporaryDirectory() as tmp:
        reqs = ["/sleep?s=1.2&id=1", "/spin?s=1.2&id=2", "/fast?id=3",
                "/deep?n=30&s=1.2&id=4", "/child?s=1.2&id=5"]
        text, err, bodies = serve({"SLOWDOG_FORMAT": "json"}, tmp, reqs)
        lines = text.splitlines()
        objs = []
        for n, line in enumerate(lines):
            try:
                objs.append(json.loads(line))
            except ValueError as ex:
                check("json: line %d parses" % (n + 1), False, "%s: %r" % (ex, line[:300]))
        check("json: every line is one object", len(objs) == len(lines) > 0,
              "%d lines" % len(lines))
        for o in objs:
            problems = check_schema(o)
            check("json: %s %s follows the schema" % (o.get("type"),
                                                      o.get("request_id")),
                  not problems, problems)
        reports = [o for o in objs if o.get("type") == "report"]
        done = [o for o in objs if o.get("type") == "finished"]
        targets = sorted(o["request"]["target"] for o in reports)
        check("json: one report per slow request",
              targets == sorted(r for r in reqs if "fast" not in r), targets)
        check("json: one finished object per report",
              sorted(o["request_id"] for o in done) ==
              sorted(o["request_id"] for o in reports), done)
        for o in reports:
            fr = o["python"]["frames"]
            check("json: %s has Python frames with sources"
                  % o["request"]["target"],
                  fr and fr[-1]["source"] and fr[-1]["line"], fr[-3:])
        check("json: nothing on stderr", "slowdog" not in err, err)


def test_repeat():
    with tempfile.TemporaryDirectory() as tmp:
        text, err, _ = serve({"SLOWDOG_REPEAT": "300ms",
                              "SLOWDOG_REPEAT_MAX": "3"}, tmp,
                             ["/sleep?s=2.2&id=r"])
        reps = re.findall(r"^Request-Id: (\S+)\n(?:Repeat:     (\d+))?", text, re.M)
        check("repeat: three captures of one request, then no more",
              len(reps) == 3 and len({r[0] for r in reps}) == 1, reps)
        check("repeat: numbered 2 and 3 after the first",
              [r[1] for r in reps] == ["", "2", "3"], reps)
        check("repeat: one finished line",
              len(re.findall(r"^slowdog: request \S+ finished after", text, re.M)) == 1,
              text[-400:])


def test_ignore_query_debug():
    with tempfile.TemporaryDirectory() as tmp:
        text, err, _ = serve({"SLOWDOG_IGNORE": "/spin, /deep*",
                              "SLOWDOG_QUERY": "strip", "SLOWDOG_DEBUG": "1"},
                             tmp, ["/spin?s=1&token=s3cret", "/deep?n=5&s=1",
                                   "/sleep?s=1&token=s3cret"])
        reqs = re.findall(r"^Request:    (.*)$", text, re.M)
        check("ignore: only the request not matched is reported",
              reqs == ["GET /sleep"], reqs)
        check("query strip: no query string anywhere in the log",
              "s3cret" not in text and "?" not in "".join(reqs), text[:300])
        check("query strip: finished line without it",
              re.search(r"finished after [0-9.]+ s: GET /sleep$", text, re.M),
              text[-300:])
        dbg = [l for l in err.splitlines() if l.startswith("slowdog: debug: ")]
        check("debug: the watchdog's start is said",
              any("watchdog started" in l for l in dbg), err)
        check("debug: ignored requests are said",
              sum("ignored (SLOWDOG_IGNORE)" in l for l in dbg) == 2, err)
        check("debug: every stderr line is one of slowdog's",
              all(l.startswith("slowdog: ") for l in err.splitlines()
                  if "slowdog" in l), err)


for t in (test_json, test_repeat, test_ignore_query_debug):
    try:
        t()
    except Exception as ex:
        check(t.__name__, False, repr(ex))
print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)

#!/usr/bin/python3
"""End-to-end tests of the Python tracebacks in slowdog reports.

Usage: /usr/bin/python3 tests/pyframes/run.py BUILD_DIR [-j N] [-k WORD]...
                                             [-q] [-v] [--keep]

For every interpreter on the machine (pyenv's 3.8 to 3.13, Debian's
/usr/bin/python3, Debian unstable's 3.14 and 3.15 where scripts/newer-python
put them) a threaded standard library WSGI server (wsgiserver.py,
app pfapp.py) runs with BUILD_DIR/libslowdog.so preloaded and gets slow
requests of many kinds at once: sleep, pure Python loop, regex holding the
GIL, hashing without the GIL, recv, a child process, a 150-deep recursion, a
30-deep recursion through map(), a streamed response, non-ASCII names, a
lambda, a list comprehension, exec'd code, a generator, coroutines. Each
report must come while its request runs (by the threshold + 1.5 s, before
the response) and show, exactly:

  - the application frames (file, line, function) in order, the innermost
    one last, with their source lines: line numbers and text come from the
    LINE:name markers in the app's source, function names from how Python
    names them on that version (<lambda>, <listcomp> before 3.12,
    <module> for exec'd code, coroutine names, UTF-8 names);
  - the whole traceback, frame for frame, as Python's own
    traceback.extract_stack() saw it in the slow function (the app sends it
    back in the response), with the source line of every frame;
  - the native frame the thread waits in, where a name is knowable.

Then, on every interpreter, one server each for: SLOWDOG_MAX_FRAMES=50
with a 300-deep recursion (both ends kept, the count of frames left out);
SLOWDOG_STACK=merged (Python frames in place of the eval loop frames, most
recent first, under the native frames they wait in); both together
(mergedmax: the outermost frames kept must stand at the outermost eval loop
frames). And a subset through gunicorn (gthread) and uWSGI (--threads) on
Debian's Python.

One line per check; exit status 1 when a check fails. -j sets how many
servers run at once (default 2), -k runs only the jobs whose name contains
a WORD (e.g. -k 3.12 -k gunicorn), -q prints failures only, -v prints the
report of every failed check, --keep keeps the logs.
"""

import argparse
import ast
import glob
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
APP = os.path.join(HERE, "pfapp.py")
VUES = os.path.join(HERE, "vues_été.py")
SERVER = os.path.join(HERE, "wsgiserver.py")
EXEC_FILE = "<string>"
APP_FILES = (APP, VUES, EXEC_FILE)

THRESHOLD = 0.6         # SLOWDOG_THRESHOLD (pfapp times its CPU-bound views from it)
SLOW = 2.5              # how long a slow request runs: past the report's deadline
REPORT_DUE = THRESHOLD + 1.5  # a report is due this long after the request was sent
FINISH_DUE = 2.0        # the finished line, this long after the response
START_DUE = 30.0        # a server answers /ping within this
STOP_DUE = 10.0
POLL = 0.02
DEEP = 150
DEEPC = 30              # recursion through map(): new eval loop per level
MAX_FRAMES = 50
DEEP_MAX = 300
MERGED_MAX_FRAMES = 20  # merged stack with frames left out: 30-deep
                        # recursions, the native stack within its 256 frames

CLOCK = time.monotonic

CRASH_MARKERS = ["Segmentation fault", "core dumped", "Fatal Python error",
                 "Traceback (most recent call last)", "Aborted", "SIGSEGV",
                 "DAMN ! worker", "WORKER TIMEOUT", "Worker failed to boot",
                 "stack smashing", "double free", "cannot be preloaded"]

# Kinds whose slow function waits in C code called from itself: its frame
# is the innermost Python frame. The others call into the standard library.
TAIL = {"child": ("subprocess.py", "_try_wait"),
        "asyncwait": ("selectors.py", "select")}

# Sent in this order, at once; the regex, which holds the GIL for long, last.
ALL_KINDS = ["sleep", "spin", "hash", "recv", "child", "deep", "deepc", "stream",
             "nonascii", "lambda", "listcomp", "exec", "gen", "async",
             "asyncwait", "regex"]
SERVER_KINDS = ["sleep", "spin", "deep", "stream", "child", "regex"]


# ---------------------------------------------------------------- markers

def read_markers():
    """LINE:name -> (file, line, stripped source), from the app's files."""
    marks = {}
    for path in (APP, VUES):
        with open(path, encoding="utf-8") as f:
            for i, text in enumerate(f, 1):
                m = re.search(r"#\s*LINE:(\S+)\s*$", text)
                if m:
                    if m.group(1) in marks:
                        raise SystemExit("duplicate marker %s" % m.group(1))
                    marks[m.group(1)] = (path, i, text.strip())
    # The exec'd source: "<string>", with no source line in reports.
    with open(APP, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "_EXEC_SRC"):
            src = ast.literal_eval(node.value)
            for i, text in enumerate(src.split("\n"), 1):
                m = re.search(r"#\s*EXEC:(\S+)\s*$", text)
                if m:
                    marks["exec:" + m.group(1)] = (EXEC_FILE, i, None)
    return marks


MARKS = read_markers()


def app_frames(kind, n, ver):
    """The application frames a report must show, outermost first:
    (file, line, function, source)."""
    views = {
        "sleep": [("view_sleep", "view_sleep"), ("sleep", "slow_sleep")],
        "spin": [("view_spin", "view_spin"), ("spin", "spin_loop")],
        "regex": [("view_regex", "view_regex"), ("regex", "regex_burn")],
        "hash": [("view_hash", "view_hash"), ("hash", "hash_burn")],
        "recv": [("view_recv", "view_recv"), ("recv", "recv_late")],
        "child": [("view_child", "view_child"), ("child", "child_wait")],
        "deep": ([("view_deep", "view_deep")]
                 + [("recurse_step", "recurse")] * (n - 1)
                 + [("recurse_base", "recurse"), ("bottom", "bottom")]),
        "deepc": ([("view_deepc", "view_deepc")]
                  + [("recurse_c_step", "recurse_c")] * (n - 1)
                  + [("recurse_c_base", "recurse_c"), ("bottom", "bottom")]),
        "nonascii": [("view_nonascii", "view_nonascii"),
                     ("données", "attendre_données")],
        "lambda": [("view_lambda", "view_lambda"), ("lambda", "<lambda>")],
        # Comprehensions are inlined into their function since 3.12.
        "listcomp": [("listcomp", "view_listcomp")]
        + ([("listcomp", "<listcomp>")] if ver < (3, 12) else []),
        "exec": [("view_exec", "view_exec"), ("exec:sleep", "<module>")],
        "gen": [("view_gen", "view_gen"), ("gen", "gen_slow")],
        "async": [("view_async", "view_async"), ("coro_outer", "coro_outer"),
                  ("coro_inner", "coro_inner")],
        "asyncwait": [("view_asyncwait", "view_asyncwait")],
    }
    if kind == "stream":
        seq = [("stream", "stream_chunks")]
    else:
        seq = [("dispatch", "app")] + views[kind]
    out = []
    for mark, func in seq:
        path, line, src = MARKS[mark]
        out.append((path, line, func, src))
    return out


# ---------------------------------------------------------------- log

class Frame(object):
    def __init__(self, indent, file, line, func):
        self.indent, self.file, self.line, self.func = indent, file, line, func
        self.source = None

    def key(self):
        return (self.file, self.line, self.func)

    def __repr__(self):
        return "%s:%s %s" % (self.file, self.line, self.func)


class Native(object):
    def __init__(self, idx, addr, sym, obj):
        self.idx, self.addr, self.obj = idx, addr, obj
        self.name = None if sym == "??" else sym.rsplit("+0x", 1)[0]
        if self.name is None and "+0x" in obj:
            # An unnamed frame: OBJECT+0xOFFSET.
            self.obj = obj.rsplit("+0x", 1)[0]

    def __repr__(self):
        return "#%d %s (%s)" % (self.idx, self.name or "??", self.obj)


FILE_RE = re.compile(r'^( *)File "(.*)", line (\d+|\?), in (.*)$')
NATIVE_RE = re.compile(r"^ *#(\d+) +0x([0-9a-f]+) (\S+) \((.*)\)$")
BRACKET_RE = re.compile(r"^ *\[(.*)\]$")
END_RE = re.compile(r"^--- end of slowdog report (\S+) ---$")
FINISHED_RE = re.compile(r"^slowdog: request (\S+) finished after ([0-9.]+) s: (.*)$")


class Report(object):
    def __init__(self, lines):
        self.lines = lines
        self.text = "\n".join(lines)
        self.fields = {}
        self.sections = []      # names, in order
        self.tb = []            # "Traceback": Frame or ("bracket", text)
        self.tb_native = []     # "In native code" under the traceback
        self.native = []        # "Native stack"
        self.merged = []        # merged stack: Frame, Native or bracket
        self.other = []         # lines not understood
        self.without_symbols = []  # lines on objects without symbols
        self.id = END_RE.match(lines[-1]).group(1)
        mode = "fields"
        last = None
        for line in lines[1:-1]:
            if mode == "fields":
                if line == "":
                    mode = None
                    continue
                k, sep, v = line.partition(":")
                if sep:
                    self.fields[k] = v.strip()
                else:
                    self.other.append(line)
                continue
            if line == "":
                continue
            head = {"Traceback (most recent call last):": "tb",
                    "  In native code (most recent call first):": "tb_native",
                    "Native stack (most recent call first):": "native",
                    "Stack (most recent call first, Python and native merged):":
                    "merged"}.get(line)
            if head:
                mode = head
                self.sections.append(head)
                last = None
                continue
            if line == "Objects without symbols (what would name their frames):" \
                    and mode in ("native", "merged"):
                mode = "help"
                continue
            if mode == "help" and re.match(r"^  \S.* build-id (?:[0-9a-f]+|none): ", line):
                self.without_symbols.append(line)
                continue
            m = FILE_RE.match(line)
            if m and mode in ("tb", "merged"):
                last = Frame(len(m.group(1)), m.group(2),
                             None if m.group(3) == "?" else int(m.group(3)),
                             m.group(4))
                getattr(self, mode).append(last)
                continue
            if last is not None and line.startswith(" " * (last.indent + 2)) \
                    and not line.startswith(" " * (last.indent + 3)) \
                    and last.source is None:
                last.source = line.strip(" ")
                last = None
                continue
            last = None
            m = NATIVE_RE.match(line)
            if m and mode in ("tb_native", "native", "merged"):
                getattr(self, mode).append(
                    Native(int(m.group(1)), m.group(2), m.group(3), m.group(4)))
                continue
            m = BRACKET_RE.match(line)
            if m and mode in ("tb", "merged", "native"):
                getattr(self, mode).append(("bracket", m.group(1)))
                continue
            self.other.append(line)

    @property
    def request(self):
        return self.fields.get("Request")

    def tb_frames(self):
        return [x for x in self.tb if isinstance(x, Frame)]

    def running(self):
        m = re.match(r"([0-9.]+) s", self.fields.get("Running", ""))
        return float(m.group(1)) if m else None


class Log(object):
    """The SLOWDOG_LOG file of one server, parsed again when it grows."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.size = -1
        self.reports, self.finished, self.stray, self.bad_utf8 = [], {}, [], False

    def refresh(self):
        with self.lock:
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if len(data) == self.size:
                return self
            self.size = len(data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_utf8 = True
                text = data.decode("utf-8", "surrogateescape")
            reports, finished, stray = [], {}, []
            lines = text.split("\n")
            if not text.endswith("\n"):
                lines = lines[:-1]      # a record still being written
            elif lines:
                lines = lines[:-1]
            i = 0
            while i < len(lines):
                line = lines[i]
                if line == "--- slowdog: slow request ---":
                    j = i + 1
                    while j < len(lines) and not END_RE.match(lines[j]):
                        j += 1
                    if j == len(lines):
                        break
                    reports.append(Report(lines[i:j + 1]))
                    i = j + 1
                    continue
                m = FINISHED_RE.match(line)
                if m:
                    finished[m.group(1)] = (float(m.group(2)), m.group(3))
                else:
                    stray.append(line)
                i += 1
            self.reports, self.finished, self.stray = reports, finished, stray
            return self

    def find(self, target):
        want = "GET " + target
        return [r for r in self.refresh().reports if r.request == want]


# ---------------------------------------------------------------- checks

class Checks(object):
    def __init__(self, job):
        self.job = job
        self.items = []         # (ok, what, detail, report text)

    def add(self, ok, what, detail="", report=None):
        self.items.append((bool(ok), "%s %s" % (self.job, what), detail,
                           report.text if report is not None and not ok else None))
        return ok

    def ordered(self, kinds):
        """Grouped by request, in the order sent; the server's checks around."""
        def key(item):
            kind = item[1].split(" ", 1)[1].split(":", 1)[0]
            if kind in kinds:
                return kinds.index(kind) + 1
            return 0 if "server starts" in item[1] else len(kinds) + 1
        return sorted(self.items, key=key)

    def failed(self):
        return [x for x in self.items if not x[0]]


def source_of(path, line, cache={}):
    """The line as Python's traceback shows it, or None."""
    if line is None or path.startswith("<"):
        return None
    if path not in cache:
        try:
            with open(path, "rb") as f:
                cache[path] = f.read().split(b"\n")
        except OSError:
            cache[path] = None
    lines = cache[path]
    if not lines or line < 1 or line > len(lines):
        return None
    text = lines[line - 1].decode("utf-8", "replace").strip()
    return text or None


def first_diff(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return "frame %d: got %r, want %r" % (i, g, w)
    if len(got) != len(want):
        return "got %d frames, want %d (first extra: %r)" % (
            len(got), len(want), (got[len(want):] or want[len(got):])[0])
    return ""


def expected_stack(recorded, kind, n, ver):
    """Python's own stack from the app, its innermost line from the marker
    (the app records the stack on the marker line or just before it)."""
    want = [tuple(x) for x in recorded]
    inner = app_frames(kind, n, ver)[-1]
    want[-1] = (want[-1][0], inner[1], want[-1][2])
    return want


def check_sources(c, what, frames, rep):
    bad = []
    for f in frames:
        want = source_of(f.file, f.line)
        if f.source != want:
            bad.append("%r: source %r, want %r" % (f, f.source, want))
    return c.add(not bad, what + ": source line under every frame",
                 "; ".join(bad[:3]), rep)


def check_app_frames(c, what, frames, kind, n, ver, rep):
    want = app_frames(kind, n, ver)
    got = [f for f in frames if f.file in APP_FILES]
    ok = c.add([f.key() for f in got] == [w[:3] for w in want],
               what + ": app frames %s, order and lines" % (
                   "(%d)" % len(want) if len(want) > 6 else
                   " > ".join(w[2] for w in want)),
               first_diff([f.key() for f in got], [w[:3] for w in want]), rep)
    bad = ["%r: %r != %r" % (f, f.source, w[3]) for f, w in zip(got, want)
           if f.source != w[3]]
    c.add(ok and not bad, what + ": app source lines", "; ".join(bad[:3]), rep)
    # The innermost app frame is the slow one, and only the standard library
    # runs under it (or nothing).
    tail = frames[frames.index(got[-1]) + 1:] if got else []
    if kind in TAIL:
        fname, func = TAIL[kind]
        ok = (got and tail and all(f.file not in APP_FILES for f in tail)
              and tail[-1].file.endswith("/" + fname) and tail[-1].func == func)
        detail = "under it: %r" % tail
    else:
        ok = got and not tail
        detail = "frames under it: %r" % tail
    c.add(ok, what + ": innermost app frame is %s" % want[-1][2], detail, rep)
    if kind in ("deep", "deepc"):
        func = {"deep": "recurse", "deepc": "recurse_c"}[kind]
        rec = [f for f in frames if f.func == func and f.file == APP]
        c.add(len(rec) == n, what + ": recursion whole (%d frames)" % n,
              "got %d %s frames" % (len(rec), func), rep)


def native_expect(kind, ver, named):
    """(names one of which must be the innermost native frame,
        a predicate on the native frames under the traceback, its label)."""
    sleep = {"select"} if ver < (3, 11) else {"clock_nanosleep"}
    if kind in ("sleep", "deep", "deepc", "stream", "nonascii", "lambda", "listcomp",
                "exec", "gen", "async"):
        return sleep, "time_sleep" if named else None
    if kind == "recv":
        return {"recv"}, "sock_recv" if named else None
    if kind == "child":
        return {"waitpid", "wait4"}, "os_waitpid" if named else None
    if kind == "asyncwait":
        return {"epoll_wait"}, "select_epoll_poll" if named else None
    if kind == "hash":
        return None, "pbkdf2" if named else "libcrypto|_hashlib"
    if kind == "regex":
        return None, "sre_" if named else None
    return None, None


def has_native(frames, pattern):
    for f in frames:
        if pattern == "libcrypto|_hashlib":
            if "libcrypto" in f.obj or "_hashlib" in f.obj:
                return True
        elif f.name and pattern.lower() in f.name.lower():
            return True
    return False


def check_native(c, what, rep, kind, ver, named, frames):
    first, extra = native_expect(kind, ver, named)
    if first is None and extra is None:
        return
    label = []
    ok = bool(frames)
    if first:
        label.append("#0 is %s" % "/".join(sorted(first)))
        ok = ok and frames[0].name in first
    if extra:
        label.append("%s under it" % extra)
        ok = ok and has_native(frames, extra)
    c.add(ok, what + ": native " + ", ".join(label),
          "native frames: %r" % frames[:8], rep)


# ---------------------------------------------------------------- client

class Request(object):
    def __init__(self, job, kind, s=SLOW, n=None):
        # The regex holds the GIL in one long match from its start.
        self.job, self.kind, self.s = job, kind, 1.0 if kind == "regex" else s
        # A stream: its first chunk, then one wait as long as the others.
        self.n = n if n is not None else {"deep": DEEP, "deepc": DEEPC,
                                          "stream": 2}.get(kind, 3)
        self.query = "s=%g&n=%d&id=%s-%s" % (self.s, self.n, job.name.replace("/", "-"),
                                            uuid.uuid4().hex[:8])
        self.target = "/%s?%s" % (kind, self.query)
        self.what = kind
        self.report = None
        self.recorded = None

    def first_line(self):
        return {
            "sleep": "slept", "spin": "spun", "regex": "matched",
            "hash": "hashed", "recv": "got x", "child": "exit 0",
            "deep": "depth %d" % self.n, "deepc": "depth %d" % self.n,
            "nonascii": "données attendues",
            "lambda": "lambda", "listcomp": "listcomp 1", "exec": "exec x=1",
            "gen": "gen ab", "async": "async done",
            "asyncwait": "async waited"}[self.kind] + " " + self.query


def read_response(sock, deadline):
    data = b""
    while True:
        sock.settimeout(max(0.1, deadline - CLOCK()))
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def parse_response(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of head in %r" % data[:200])
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                   (x.partition(":") for x in lines[1:]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size, _, rest = body.partition(b"\r\n")
            size = int(size.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2:]
        body = out
    elif "content-length" in headers:
        if len(body) != int(headers["content-length"]):
            raise ValueError("body %d bytes, Content-Length %s"
                             % (len(body), headers["content-length"]))
    return status, body


def run_request(job, rq):
    c = job.checks
    what = rq.what
    sock = socket.create_connection(("127.0.0.1", job.port), timeout=10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = CLOCK()
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      "Connection: close\r\n\r\n" % (rq.target, job.port)).encode())
        # The report, while the request runs.
        reps = []
        while CLOCK() < t0 + REPORT_DUE:
            reps = job.log.find(rq.target)
            if reps:
                break
            time.sleep(POLL)
        t_rep = CLOCK() - t0
        running = None
        if reps:
            # What has come of the response so far, without waiting.
            sock.settimeout(0)
            try:
                peek = sock.recv(65536, socket.MSG_PEEK)
            except BlockingIOError:
                peek = None
            if rq.kind == "stream":
                # The first chunk goes before the first wait.
                running = peek is None or (peek != b"" and not peek.endswith(b"0\r\n\r\n"))
            else:
                running = peek is None
        c.add(reps, "%s: report within %.1f s" % (what, REPORT_DUE),
              "none after %.2f s" % t_rep)
        if reps:
            rq.report = reps[0]
            c.add(running, "%s: report while the request runs (%.2f s)" % (what, t_rep),
                  "the response had already come")
        data = read_response(sock, t0 + 30)
        t_resp = CLOCK()
    finally:
        sock.close()
    # The response.
    try:
        status, body = parse_response(data)
        body = body.decode("utf-8")
        lines = body.split("\n")
        if rq.kind == "stream":
            want = ["chunk %d %s" % (i, rq.query) for i in range(rq.n)]
            ok = status == 200 and lines[:rq.n] == want and lines[-1] == ""
            rq.recorded = json.loads(lines[rq.n])
        else:
            ok = status == 200 and lines[0] == rq.first_line() and lines[2:] == [""]
            rq.recorded = json.loads(lines[1])
        detail = "status %d, body %r" % (status, body[:200])
    except Exception as e:
        ok, detail = False, "bad response: %s: %r" % (e, data[:300])
    c.add(ok and rq.recorded, "%s: response 200 with the expected body" % what, detail)
    # The finished line.
    if rq.report is not None:
        fin = None
        while CLOCK() < t_resp + FINISH_DUE:
            fin = job.log.refresh().finished.get(rq.report.id)
            if fin:
                break
            time.sleep(POLL)
        c.add(fin and fin[1] == "GET " + rq.target
              and fin[0] >= (rq.report.running() or 0),
              "%s: finished line" % what, "got %r" % (fin,), rq.report)


# ---------------------------------------------------------------- servers

class Interp(object):
    def __init__(self, label, path, ver, named):
        self.label, self.path, self.ver, self.named = label, path, ver, named


def find_interpreters():
    try:
        root = subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        root = ""
    roots = [r for r in (root, os.path.expanduser("~/.pyenv"), "/root/.pyenv") if r]
    found, missing = [], []
    for minor in range(8, 14):
        cands = []
        for r in roots:
            cands += glob.glob(os.path.join(r, "versions", "3.%d.*" % minor,
                                            "bin", "python3.%d" % minor))
        cands = [p for p in cands if re.search(r"/3\.%d\.\d+/" % minor, p)]
        cands.sort(key=lambda p: int(re.search(r"/3\.%d\.(\d+)/" % minor, p).group(1)))
        if cands:
            found.append(Interp("py3.%d" % minor, cands[-1], (3, minor), True))
        else:
            missing.append("3.%d" % minor)
    if os.path.exists("/usr/bin/python3"):
        out = subprocess.run(["/usr/bin/python3", "-c",
                              "import sys; print('%d %d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
        # Debian's interpreter is stripped: its static functions are "??".
        found.append(Interp("debian%s.%s" % tuple(out), "/usr/bin/python3",
                            tuple(map(int, out)), False))
    # Debian unstable's, with their debug symbols (by build id).
    newer = os.environ.get("SLOWDOG_NEWER_PYTHON", "/opt/slowdog-python")
    for minor in (14, 15):
        path = os.path.join(newer, "3.%d" % minor, "bin", "python3.%d" % minor)
        if os.access(path, os.X_OK):
            found.append(Interp("unstable3.%d" % minor, path, (3, minor), True))
        else:
            missing.append("3.%d" % minor)
    return found, missing


class Job(object):
    """One server with the library preloaded, and its requests."""

    def __init__(self, name, interp, flavour, kinds, env=(), mode="split"):
        self.name, self.interp, self.flavour = name, interp, flavour
        self.env_extra = dict(env)
        self.mode = mode
        self.checks = Checks(name)
        self.requests = [Request(self, k) if isinstance(k, str) else Request(self, *k)
                         for k in kinds]
        self.port = None
        self.proc = None
        self.elapsed = 0.0

    def command(self):
        if self.flavour == "stdlib":
            return [self.interp.path, SERVER, "0", "pfapp:app"], signal.SIGINT
        if self.flavour == "gunicorn":
            return ["/usr/bin/gunicorn", "-k", "gthread", "--threads", "32", "-w", "1",
                    "-b", "127.0.0.1:0", "--chdir", HERE, "--timeout", "60",
                    "pfapp:app"], signal.SIGTERM
        # uWSGI reloads on SIGTERM: SIGINT stops it.
        self.port = harness.free_port()
        return ["uwsgi", "--plugin", "python3", "--http-socket",
                "127.0.0.1:%d" % self.port, "--wsgi-file", APP, "--callable", "app",
                "--pythonpath", HERE, "--threads", "32", "--need-app",
                "--disable-logging"], signal.SIGINT

    def start(self, lib, tmp):
        self.tmp = tmp
        self.log = Log(os.path.join(tmp, "slowdog.log"))
        env = harness.env(lib, self.log.path, THRESHOLD, **self.env_extra)
        argv, self.stop_signal = self.command()
        self.err_path = os.path.join(tmp, "server.err")
        # The port: from the server (stdlib, gunicorn), or chosen (uWSGI).
        self.server = harness.Server(argv, env, self.err_path, port=self.port or 0,
                                     cwd=tmp, stop_signal=self.stop_signal,
                                     stdout="pipe", wait=None)
        self.proc = self.server.p
        deadline = CLOCK() + START_DUE
        if self.flavour == "stdlib":
            line = self.proc.stdout.readline().decode()
            m = re.match(r"listening (\d+)", line)
            if not m:
                return "no port from the server: %r" % line
            self.port = int(m.group(1))
        elif self.flavour == "gunicorn":
            while CLOCK() < deadline and self.port is None:
                with open(self.err_path, "rb") as f:
                    m = re.search(rb"Listening at: http://127.0.0.1:(\d+)", f.read())
                if m:
                    self.port = int(m.group(1))
                elif self.proc.poll() is not None:
                    break
                else:
                    time.sleep(POLL)
        while CLOCK() < deadline and self.port is not None:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if read_response(s, CLOCK() + 5).startswith(b"HTTP/1.1 200"):
                        return None
            except OSError:
                pass
            time.sleep(0.05)
        return "server did not answer /ping (exit status %r)" % self.proc.poll()

    def stop(self):
        c = self.checks
        alive = self.proc.poll() is None
        c.add(alive, "server still running at the end", "exit status %r" % self.proc.poll())
        err = self.server.stop(STOP_DUE)
        if self.server.stop_problem:
            c.add(False, "server stops on %s" % self.stop_signal.name, "killed")
        bad = [line for line in err.splitlines()
               if any(m in line for m in CRASH_MARKERS) or line.startswith("slowdog:")]
        c.add(not bad, "server stderr clean (no crash, no slowdog message)",
              "; ".join(bad[:5]))

    def run(self, lib, tmp):
        t0 = CLOCK()
        why = self.start(lib, tmp)
        if not self.checks.add(why is None, "server starts (%s)" % self.flavour, why or ""):
            self.server.stop(sig=signal.SIGKILL)
            self.elapsed = CLOCK() - t0
            return
        threads = [threading.Thread(target=self.client, args=(rq,)) for rq in self.requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.stop()
        log = self.log.refresh()
        targets = {"GET " + rq.target for rq in self.requests}
        counts = {}
        for r in log.reports:
            counts[r.request] = counts.get(r.request, 0) + 1
        c = self.checks
        c.add(all(counts.get(t) == 1 for t in targets) and set(counts) <= targets,
              "one report per slow request, none other",
              "reports: %r" % {k: v for k, v in counts.items() if v != 1 or k not in targets})
        c.add(not log.stray and not log.bad_utf8, "log well-formed UTF-8 records",
              "stray lines: %r" % log.stray[:3])
        self.elapsed = CLOCK() - t0

    def client(self, rq):
        try:
            run_request(self, rq)
            if rq.report is not None and rq.recorded:
                self.verify(rq)
        except Exception as e:
            import traceback
            self.checks.add(False, "%s: client" % rq.what,
                            "%s\n%s" % (e, traceback.format_exc()))

    def verify(self, rq):
        c, rep, ver = self.checks, rq.report, self.interp.ver
        what = rq.what
        cap = rep.fields.get("Capture", "")
        c.add(cap and not cap.startswith("failed"), "%s: capture ok (%s)" % (what, cap),
              "", rep)
        if self.mode == "merged":
            return self.verify_merged(rq)
        if self.mode == "mergedmax":
            return self.verify_mergedmax(rq)
        ok = rep.sections[:1] == ["tb"] and "native" in rep.sections and not rep.other
        c.add(ok, "%s: report sections (traceback, native stack)" % what,
              "sections %r, unknown lines %r" % (rep.sections, rep.other[:3]), rep)
        frames = rep.tb_frames()
        want = expected_stack(rq.recorded, rq.kind, rq.n, ver)
        if self.mode == "maxframes":
            return self.verify_maxframes(rq, frames, want)
        brackets = [x for x in rep.tb if not isinstance(x, Frame)]
        c.add(not brackets, "%s: no frames left out" % what, repr(brackets), rep)
        check_app_frames(c, what, frames, rq.kind, rq.n, ver, rep)
        got = [f.key() for f in frames]
        if rq.kind in TAIL:
            got = got[:len(want)]
        c.add(got == want, "%s: whole traceback = Python's own (%d frames)" % (what, len(want)),
              first_diff(got, want), rep)
        check_sources(c, what, frames, rep)
        check_native(c, what, rep, rq.kind, ver, self.interp.named, rep.tb_native)

    def verify_maxframes(self, rq, frames, want):
        c, rep, what = self.checks, rq.report, rq.what
        items = rep.tb
        idx = [i for i, x in enumerate(items) if not isinstance(x, Frame)]
        left = len(want) - MAX_FRAMES
        m = None
        if len(idx) == 1:
            m = re.match(r"\.\.\. (\d+) frames not shown \(SLOWDOG_MAX_FRAMES\) \.\.\.$",
                         items[idx[0]][1])
        c.add(m and int(m.group(1)) == left,
              "%s: one bracketed line: %d frames not shown" % (what, left),
              "brackets %r" % [items[i] for i in idx], rep)
        if not m:
            return
        outer = [f.key() for f in items[:idx[0]]]
        inner = [f.key() for f in items[idx[0] + 1:]]
        c.add(len(outer) + len(inner) == MAX_FRAMES and outer and inner,
              "%s: %d frames shown, from both ends (%d outer, %d inner)"
              % (what, MAX_FRAMES, len(outer), len(inner)),
              "%d + %d" % (len(outer), len(inner)), rep)
        c.add(outer == want[:len(outer)],
              "%s: outermost frames kept (%s first)" % (what, want[0][2]),
              first_diff(outer, want[:len(outer)]), rep)
        c.add(inner == want[len(want) - len(inner):],
              "%s: innermost frames kept (%s last)" % (what, want[-1][2]),
              first_diff(inner, want[len(want) - len(inner):]), rep)
        check_sources(c, what, frames, rep)

    def verify_merged(self, rq):
        c, rep, what, ver = self.checks, rq.report, rq.what, self.interp.ver
        c.add(rep.sections == ["merged"] and not rep.other,
              "%s: one merged stack section" % what,
              "sections %r, unknown lines %r" % (rep.sections, rep.other[:3]), rep)
        items = rep.merged
        frames = [x for x in items if isinstance(x, Frame)]
        want = list(reversed(expected_stack(rq.recorded, rq.kind, rq.n, ver)))
        got = [f.key() for f in frames]
        c.add(got == want, "%s: merged Python frames = Python's own, most recent first (%d)"
              % (what, len(want)), first_diff(got, want), rep)
        check_sources(c, what, frames, rep)
        # Each run of Python frames stands in place of exactly one native
        # frame (the eval loop's): the numbering skips one index there.
        expect, groups, bad, prev = 0, 0, [], None
        for x in items:
            if isinstance(x, Native):
                if x.idx != expect:
                    bad.append("#%d where #%d was due" % (x.idx, expect))
                expect = x.idx + 1
            elif isinstance(x, Frame) and not isinstance(prev, Frame):
                groups += 1
                expect += 1
            elif not isinstance(x, Frame):
                bad.append("bracket %r" % (x,))
            prev = x
        natives = [x for x in items if isinstance(x, Native)]
        evals = [x for x in natives if x.name and "EvalFrame" in x.name]
        c.add(groups and not bad and not evals,
              "%s: Python frames in place of the eval loop frames (%d groups)"
              % (what, groups), "; ".join(bad[:3]) + (" eval frames left: %r" % evals
                                                      if evals else ""), rep)
        # Native frames where the innermost Python frame waits come first.
        first_py = items.index(frames[0]) if frames else 0
        above = [x for x in items[:first_py] if isinstance(x, Native)]
        check_native(c, what, rep, rq.kind, ver, self.interp.named, above)

    def verify_mergedmax(self, rq):
        """Merged stack with frames left out: the innermost and outermost
        Python frames kept, each in place of its own eval loop frame."""
        c, rep, what, ver = self.checks, rq.report, rq.what, self.interp.ver
        items = rep.merged
        natives = [x for x in items if isinstance(x, Native)]
        brackets = [i for i, x in enumerate(items) if isinstance(x, tuple)]
        c.add(rep.sections == ["merged"] and not rep.other and len(brackets) == 1,
              "%s: one merged stack section, one bracketed line, native stack whole" % what,
              "sections %r, brackets %r, unknown lines %r"
              % (rep.sections, [items[i] for i in brackets], rep.other[:3]), rep)
        want = list(reversed(expected_stack(rq.recorded, rq.kind, rq.n, ver)))
        left = len(want) - MERGED_MAX_FRAMES
        m = None
        if brackets:
            m = re.match(r"\.\.\. (\d+) Python frames not shown \.\.\.$", items[brackets[0]][1])
        if not c.add(m and int(m.group(1)) == left,
                     "%s: bracketed line: %d Python frames not shown" % (what, left),
                     "%r" % (items[brackets[0]] if brackets else None,), rep):
            return
        b = brackets[0]
        inner = [x.key() for x in items[:b] if isinstance(x, Frame)]
        outer = [x.key() for x in items[b + 1:] if isinstance(x, Frame)]
        c.add(inner and outer and len(inner) + len(outer) == MERGED_MAX_FRAMES
              and inner == want[:len(inner)] and outer == want[len(want) - len(outer):],
              "%s: innermost and outermost Python frames kept, most recent first "
              "(%d + %d)" % (what, len(inner), len(outer)),
              first_diff(inner + outer, want[:len(inner)] + want[len(want) - len(outer):]),
              rep)
        # The outermost frames stand where their own eval loop frames are:
        # the eval loop frames of the frames left out are not theirs, and
        # none is left below the outermost Python frame.
        last = max(i for i, x in enumerate(items) if isinstance(x, Frame))
        below = [x for x in items[last + 1:] if isinstance(x, Native)]
        evals = [x for x in below if x.name and "EvalFrame" in x.name]
        c.add(below and not evals,
              "%s: outermost Python frames at the outermost eval loop frames" % what,
              "%d eval loop frames under the outermost Python frame %r, first %r"
              % (len(evals), items[last], evals[:1]), rep)
        first_py = next(i for i, x in enumerate(items) if isinstance(x, Frame))
        above = [x for x in items[:first_py] if isinstance(x, Native)]
        check_native(c, what, rep, rq.kind, ver, self.interp.named, above)


# ---------------------------------------------------------------- main

def make_jobs(interps):
    jobs = []
    for it in interps:
        jobs.append(Job("%s/main" % it.label, it, "stdlib", ALL_KINDS))
    for it in interps:
        jobs.append(Job("%s/maxframes" % it.label, it, "stdlib",
                        [("deep", SLOW, DEEP_MAX)], {"SLOWDOG_MAX_FRAMES": str(MAX_FRAMES)},
                        mode="maxframes"))
        jobs.append(Job("%s/merged" % it.label, it, "stdlib",
                        [("deep", SLOW, 5), "async", "recv"],
                        {"SLOWDOG_STACK": "merged"}, mode="merged"))
        jobs.append(Job("%s/mergedmax" % it.label, it, "stdlib",
                        [("deep", SLOW, DEEPC), ("deepc", SLOW, DEEPC)],
                        {"SLOWDOG_STACK": "merged",
                         "SLOWDOG_MAX_FRAMES": str(MERGED_MAX_FRAMES)},
                        mode="mergedmax"))
    debian = [it for it in interps if it.path == "/usr/bin/python3"]
    if debian:
        jobs.append(Job("gunicorn-gthread", debian[0], "gunicorn", SERVER_KINDS))
        jobs.append(Job("uwsgi-threads", debian[0], "uwsgi", SERVER_KINDS))
    return jobs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", help="build directory holding libslowdog.so")
    ap.add_argument("-j", type=int, default=2, help="servers at once (default 2)")
    ap.add_argument("-k", action="append", default=[], help="only jobs whose name has this")
    ap.add_argument("-q", action="store_true", help="print failed checks only")
    ap.add_argument("-v", action="store_true", help="print the report of failed checks")
    ap.add_argument("--keep", action="store_true", help="keep the logs")
    args = ap.parse_args()
    t_start = CLOCK()
    lib = os.path.join(args.build, "libslowdog.so")
    if not os.path.exists(lib):
        print("FAIL no %s" % lib)
        return 1
    interps, missing = find_interpreters()
    for m in missing:
        print("skip python%s: not installed" % m)
    jobs = make_jobs(interps)
    if not shutil.which("gunicorn") and not os.path.exists("/usr/bin/gunicorn"):
        jobs = [j for j in jobs if j.flavour != "gunicorn"]
        print("skip gunicorn: not installed")
    if not shutil.which("uwsgi") or not os.path.exists(
            "/usr/lib/uwsgi/plugins/python3_plugin.so"):
        jobs = [j for j in jobs if j.flavour != "uwsgi"]
        print("skip uwsgi: no uwsgi or no python3 plugin")
    if args.k:
        jobs = [j for j in jobs if any(k in j.name for k in args.k)]
    top = tempfile.mkdtemp(prefix="slowdog-pyframes-")
    # A copy: the build directory may be rebuilt while the servers start.
    lib_copy = os.path.join(top, "libslowdog.so")
    shutil.copy2(lib, lib_copy)
    todo = queue.Queue()
    for j in jobs:
        todo.put(j)
    out_lock = threading.Lock()
    totals = {"checks": 0, "failed": 0}
    by_job = []

    def worker():
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            tmp = os.path.join(top, job.name.replace("/", "-"))
            os.mkdir(tmp)
            try:
                job.run(lib_copy, tmp)
            except Exception as e:
                import traceback
                job.checks.add(False, "runner", "%s\n%s" % (e, traceback.format_exc()))
            with out_lock:
                for ok, what, detail, text in job.checks.ordered(
                        [rq.kind for rq in job.requests]):
                    totals["checks"] += 1
                    totals["failed"] += not ok
                    if ok and args.q:
                        continue
                    print("%s %s%s" % ("ok  " if ok else "FAIL", what,
                                       "" if ok or not detail else ": " + detail))
                    if text and args.v:
                        print("    | " + text.replace("\n", "\n    | "))
                nf = len(job.checks.failed())
                by_job.append((job.name, len(job.checks.items), nf, job.elapsed))
                sys.stdout.flush()

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.j))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("")
    for name, n, nf, el in sorted(by_job):
        print("%-22s %3d checks %s  %.1f s" % (name, n, "%d FAILED" % nf if nf else "ok", el))
    print("%d checks, %d failed, %.1f s (logs in %s)" % (
        totals["checks"], totals["failed"], CLOCK() - t_start,
        top if args.keep or totals["failed"] else "-"))
    if not args.keep and not totals["failed"]:
        shutil.rmtree(top, ignore_errors=True)
    return 1 if totals["failed"] or not jobs else 0


if __name__ == "__main__":
    sys.exit(main())

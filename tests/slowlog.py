"""Strict parser for the text log that libslowdog.so writes.

A log is a sequence of records, each written with one write():

  * a report block, from "--- slowdog: slow request ---" to
    "--- end of slowdog report <id> ---";
  * a finished line, "slowdog: request <id> finished after <s> s: <request>",
    followed by " [<name>=<value> ...]" when the request carried ids;
  * a death record, written by the master that reaped a worker:
    "slowdog: request <id> never finished: worker <pid> <how>, <s> s into
    the request: <request>".

Blank lines between records are tolerated; anything else is an error.
parse() never raises on bad input: it returns the records it understood
and a list of error strings naming the line.
"""

import re

BEGIN = "--- slowdog: slow request ---"
END_RE = re.compile(r"^--- end of slowdog report (\d+-\d+) ---$")
FINISHED_RE = re.compile(
    r"^slowdog: request (\d+-\d+) finished after (\d+\.\d{3}) s"
    r"(?:: (\S.*?)(?: \[([!-~]+=[!-~]*(?: [!-~]+=[!-~]*)*)\])?)?$")

DIED_RE = re.compile(
    r"^slowdog: request (\d+-\d+) never finished: worker (\d+) (.+), "
    r"(\d+\.\d{3}) s into the request: (\S.*)$")

# Header fields in the order they must appear; Host, Ids, Queued,
# Last-Words, GIL and Holder are optional.
FIELDS = ["Time", "Request", "Host", "Ids", "Queued", "Request-Id", "Process",
          "Parent", "Thread", "Started", "Running", "Last-Words", "Capture",
          "GIL", "Holder"]
OPTIONAL = {"Host", "Ids", "Queued", "Last-Words", "GIL", "Holder"}
# "name=value ..." (each value escaped: no space in it), then notes
IDS_RE = re.compile(r"^([!-~]+=[!-~]*(?: [!-~]+=[!-~]*)*|-)(?: \((.+)\))?$")
QUEUED_RE = re.compile(
    r"^(?:(\d+\.\d{3}) s before the worker read it \(([!-~]+): ([!-~]*)\)"
    r"|unknown: ([!-~]+): ([!-~]*) is (?:not a time stamp"
    r"|(\d+\.\d{3}) s (after|before) the worker's first read "
    r"\(clocks differ, or not a time\)))"
    r"(; the threshold counts from (?:the stamp|the first read))?$")


def parse_ids(text):
    """{name: value} of an Ids: line or a finished line's ids."""
    m = IDS_RE.match(text or "")
    if not m or m.group(1) == "-":
        return {}
    return dict(w.split("=", 1) for w in m.group(1).split(" "))
LAST_WORDS_RE = re.compile(
    r"^SIG[A-Z0-9+]+ (?:from pid \d+ \((?:the parent|this process|another process)\)"
    r"|from (?:the kernel|the parent|this process|another process)"
    r"|coming from pid \d+ \(the parent\)"
    r"|in this thread \(address 0x[0-9a-f]+\), a crash)"
    r", \d+\.\d{3} s into the request$")
FIELD_RE = re.compile(r"^([A-Z][A-Za-z-]*):( +)(.*)$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$")
RUNNING_RE = re.compile(r"^(\d+\.\d{3}) s \(threshold (\d+\.\d{3}) s\)$")
# format.txt: "blocked in NAME()", "signal", "syscall", "failed: why";
# src/report.c writes "signal (thread stopped for 14.6 us)" and
# "asleep in futex() (system call 202)" for the last two.
CAPTURE_RE = re.compile(
    r"^(blocked in ([A-Za-z0-9_.@]+)\(\)"
    r"|asleep in ([A-Za-z0-9_]+)\(\) \(system call \d+\)"
    r"|signal(?: \(thread stopped for \d+(?:\.\d+)? us\))?"
    r"|in the handler of the deadly signal \(thread stopped for \d+(?:\.\d+)? us\)"
    r"|syscall|failed: .+)$")
PROCESS_RE = re.compile(r"^(\d+) (.*)$")
THREAD_RE = re.compile(r"^(\d+) \((.*)\)$")
# METHOD SP target, or the placeholders src/report.c writes for a request
# it could not parse.
REQUEST_RE = re.compile(r"^([!-~]+ [!-~]+|\(request not parsed\)|\(not HTTP\))$")
REQID_RE = re.compile(r"^(\d+)-(\d+)$")

TB_HEAD = "Traceback (most recent call last):"
# format.txt names the first; the library also writes the second when the
# thread runs no Python code at all.
TB_NONE_RE = re.compile(r"^(Python frames unavailable: .+|No Python frames on this thread\.)$")
PY_FRAME_RE = re.compile(r'^  File "(.*)", line (\d+), in (.+)$')
PY_SOURCE_RE = re.compile(r"^    (.*)$")
NATIVE_HEAD = "Native stack (most recent call first):"
NATIVE_FRAME_RE = re.compile(
    r"^  #(\d+) +0x([0-9a-f]+) (\S+?)(?:\+0x([0-9a-f]+))?(?: \((.*)\))?$")
# In the traceback: the C code the innermost Python frame waits in.
PY_NATIVE_HEAD = "  In native code (most recent call first):"
PY_NATIVE_FRAME_RE = re.compile("^  " + NATIVE_FRAME_RE.pattern[1:])
CUT_LINE = "[report cut: too long]"
# After the stack: one line per object without symbols that holds unnamed
# frames, and what would name them.
HELP_HEAD = "Objects without symbols (what would name their frames):"
HELP_RE = re.compile(r"^  (.+?) build-id ([0-9a-f]+|none): (.+)$")
# An unnamed frame's object carries the address in the object: OBJ+0xOFF.
OBJ_OFFSET_RE = re.compile(r"^(.*)\+0x([0-9a-f]+)$")


class PyFrame(object):
    def __init__(self, file, line, func):
        self.file = file
        self.line = line
        self.func = func
        self.source = None

    def __repr__(self):
        return "%s:%d %s" % (self.file, self.line, self.func)


class NativeFrame(object):
    def __init__(self, index, addr, name, offset, obj, obj_offset=None):
        self.index = index
        self.addr = addr
        self.name = name            # None when "??"
        self.offset = offset
        self.obj = obj              # None when not given
        self.obj_offset = obj_offset  # unnamed frames: address in obj

    @property
    def base_name(self):
        """Symbol without versions and the usual libc prefixes."""
        if not self.name:
            return ""
        n = self.name.split("@")[0]
        for p in ("__libc_", "__GI___", "__GI_", "__"):
            if n.startswith(p):
                n = n[len(p):]
                break
        for s in ("_time64", "64"):
            if n.endswith(s) and n not in ("sendfile64",):
                n = n[: -len(s)]
                break
        return n

    def __repr__(self):
        return "#%d %s (%s)" % (self.index, self.name or "??", self.obj)


class Report(object):
    def __init__(self, lineno):
        self.lineno = lineno        # line of the begin marker, 1-based
        self.fields = {}
        self.py_frames = []         # outermost first, as printed
        self.py_note = None         # the "unavailable" line, if any
        self.py_extra = []          # lines in the traceback we did not parse
        self.py_native = []         # "In native code" frames, innermost first
        self.native = []            # innermost first
        self.cut = False
        self.native_note = None
        self.native_extra = []
        self.without_symbols = []   # (object, build id or None, help)
        self.end_id = None

    # Convenience accessors, valid once parse() accepted the report.
    @property
    def request(self):
        return self.fields.get("Request")

    @property
    def request_id(self):
        return self.fields.get("Request-Id")

    @property
    def ids(self):
        """{name: value} of the Ids: line ({} without one)."""
        return parse_ids(self.fields.get("Ids"))

    # The accessors below return None (or "") for a field that did not
    # parse; parse() has reported it already.
    def _m(self, rx, key, group):
        m = rx.match(self.fields.get(key, ""))
        return m.group(group) if m else None

    @property
    def pid(self):
        v = self._m(PROCESS_RE, "Process", 1)
        return int(v) if v else None

    @property
    def cmdline(self):
        return self._m(PROCESS_RE, "Process", 2) or ""

    @property
    def ppid(self):
        v = self.fields.get("Parent", "")
        return int(v) if v.isdigit() else None

    @property
    def tid(self):
        v = self._m(THREAD_RE, "Thread", 1)
        return int(v) if v else None

    @property
    def thread_name(self):
        return self._m(THREAD_RE, "Thread", 2)

    @property
    def running(self):
        v = self._m(RUNNING_RE, "Running", 1)
        return float(v) if v else None

    @property
    def threshold(self):
        v = self._m(RUNNING_RE, "Running", 2)
        return float(v) if v else None

    @property
    def capture(self):
        return self.fields.get("Capture", "")

    @property
    def blocked_in(self):
        m = CAPTURE_RE.match(self.fields.get("Capture", ""))
        return (m.group(2) or m.group(3)) if m else None

    def __repr__(self):
        return "<report %s %s>" % (self.request_id, self.request)


class Finished(object):
    def __init__(self, lineno, request_id, seconds, request, ids=None):
        self.lineno = lineno
        self.request_id = request_id
        self.seconds = seconds
        self.request = request
        self.ids = parse_ids(ids)   # {name: value}, {} without

    def __repr__(self):
        return "<finished %s %.3f %s>" % (self.request_id, self.seconds, self.request)


class Died(object):
    """A request that never finished: its worker died (the master says)."""

    def __init__(self, lineno, request_id, pid, how, seconds, request):
        self.lineno = lineno
        self.request_id = request_id
        self.pid = int(pid)
        self.how = how
        self.seconds = seconds
        self.request = request

    def __repr__(self):
        return "<died %s %s %.3f %s>" % (self.request_id, self.how, self.seconds,
                                        self.request)


def _check_fields(rep, err):
    f = rep.fields
    if not TIME_RE.match(f.get("Time", "")):
        err("bad Time: %r" % f.get("Time"))
    if not TIME_RE.match(f.get("Started", "")):
        err("bad Started: %r" % f.get("Started"))
    if not REQUEST_RE.match(f.get("Request", "")):
        err("bad Request: %r" % f.get("Request"))
    if "Host" in f and not re.match(r"^[!-~]+$", f["Host"]):
        err("bad Host: %r" % f["Host"])
    m = REQID_RE.match(f.get("Request-Id", ""))
    if not m:
        err("bad Request-Id: %r" % f.get("Request-Id"))
    p = PROCESS_RE.match(f.get("Process", ""))
    if not p:
        err("bad Process: %r" % f.get("Process"))
    elif m and p.group(1) != m.group(1):
        err("Request-Id %s does not start with the pid %s" % (m.group(0), p.group(1)))
    if not re.match(r"^\d+$", f.get("Parent", "")):
        err("bad Parent: %r" % f.get("Parent"))
    if not THREAD_RE.match(f.get("Thread", "")):
        err("bad Thread: %r" % f.get("Thread"))
    r = RUNNING_RE.match(f.get("Running", ""))
    if not r:
        err("bad Running: %r" % f.get("Running"))
    if not CAPTURE_RE.match(f.get("Capture", "")):
        err("bad Capture: %r" % f.get("Capture"))
    if "Ids" in f and not IDS_RE.match(f["Ids"]):
        err("bad Ids: %r" % f["Ids"])
    if "Queued" in f and not QUEUED_RE.match(f["Queued"]):
        err("bad Queued: %r" % f["Queued"])
    if "Last-Words" in f and not LAST_WORDS_RE.match(f["Last-Words"]):
        err("bad Last-Words: %r" % f["Last-Words"])


def parse(text):
    """Returns (reports, finished, errors); death records are accepted
    (parse_all returns them)."""
    reports, finished, _died, errors = parse_all(text)
    return reports, finished, errors


def parse_all(text):
    """Returns (reports, finished, died, errors)."""
    reports, finished, died, errors = [], [], [], []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        errors.append("line %d: log does not end with a newline: %r"
                      % (len(lines), lines[-1][:200]))
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if line == "":
            i += 1
            continue
        fm = FINISHED_RE.match(line)
        if fm:
            finished.append(Finished(i + 1, fm.group(1), float(fm.group(2)),
                                     fm.group(3), fm.group(4)))
            i += 1
            continue
        dm = DIED_RE.match(line)
        if dm:
            died.append(Died(i + 1, dm.group(1), dm.group(2), dm.group(3),
                             float(dm.group(4)), dm.group(5)))
            i += 1
            continue
        if line != BEGIN:
            errors.append("line %d: not part of a record: %r" % (i + 1, line[:200]))
            i += 1
            continue
        i = _parse_report(lines, i, reports, errors)
    return reports, finished, died, errors


def _native(m):
    name = m.group(3)
    obj = m.group(5)
    obj_offset = None
    om = OBJ_OFFSET_RE.match(obj or "")
    if name == "??" and om:
        obj, obj_offset = om.group(1), int(om.group(2), 16)
    return NativeFrame(int(m.group(1)), int(m.group(2), 16),
                       None if name == "??" else name,
                       int(m.group(4), 16) if m.group(4) else None,
                       None if obj in (None, "??") else obj, obj_offset)


def _parse_report(lines, i, reports, errors):
    rep = Report(i + 1)
    start = i
    errs = []

    def err(msg, at=None):
        errs.append("line %d (report at line %d): %s"
                    % ((at if at is not None else i) + 1, start + 1, msg))

    n = len(lines)
    i += 1
    # Header fields, in order, up to the first blank line.
    order = 0
    while i < n and lines[i] != "":
        if lines[i] == BEGIN or END_RE.match(lines[i]):
            break
        m = FIELD_RE.match(lines[i])
        if not m:
            err("bad header line %r" % lines[i][:200])
            i += 1
            continue
        key, value = m.group(1), m.group(3)
        if len(key) + 1 + len(m.group(2)) != 12:
            err("value of %s not aligned at column 12" % key)
        if key not in FIELDS:
            err("unknown field %r" % key)
        elif FIELDS.index(key) < order:
            err("field %s out of order" % key)
        elif key in rep.fields:
            err("duplicate field %s" % key)
        else:
            order = FIELDS.index(key)
            rep.fields[key] = value
        i += 1
    for key in FIELDS:
        if key not in rep.fields and key not in OPTIONAL:
            err("missing field %s" % key)
    if not errs:
        _check_fields(rep, err)

    # Sections, each introduced by a blank line.
    section = None
    seen = set()
    while i < n:
        line = lines[i]
        if line == BEGIN or FINISHED_RE.match(line):
            err("report not terminated")
            break
        m = END_RE.match(line)
        if m:
            rep.end_id = m.group(1)
            i += 1
            break
        if line == "":
            section = "gap"
            i += 1
            continue
        if section == "gap":
            if line == TB_HEAD and "py" not in seen and "native" not in seen:
                section = "py"
                seen.add("py")
            elif TB_NONE_RE.match(line) and "py" not in seen and "native" not in seen:
                rep.py_note = line
                seen.add("py")
                section = "py-note"
            elif line == NATIVE_HEAD and "native" not in seen:
                section = "native"
                seen.add("native")
            elif "native" not in seen and not line.startswith(" ") and (
                    "native" in line.lower() or "stack" in line.lower()):
                # "a line saying why not" in place of the native stack
                rep.native_note = line
                seen.add("native")
                section = "native-note"
            else:
                err("unexpected line %r" % line[:200])
            i += 1
            continue
        if line == CUT_LINE:
            rep.cut = True
            i += 1
            continue
        if line == HELP_HEAD and "native" in seen and "help" not in seen:
            section = "help"
            seen.add("help")
            i += 1
            continue
        if section == "help":
            hm = HELP_RE.match(line)
            if hm:
                rep.without_symbols.append(
                    (hm.group(1), None if hm.group(2) == "none" else hm.group(2),
                     hm.group(3)))
            else:
                err("bad line among the objects without symbols %r" % line[:200])
            i += 1
            continue
        if section == "py" and line == PY_NATIVE_HEAD:
            section = "py-native"
            i += 1
            continue
        if section == "py-native":
            nm = PY_NATIVE_FRAME_RE.match(line)
            if nm:
                rep.py_native.append(_native(nm))
            else:
                err("bad native frame line under the traceback %r" % line[:200])
        elif section == "py":
            fm = PY_FRAME_RE.match(line)
            sm = PY_SOURCE_RE.match(line)
            if fm:
                rep.py_frames.append(PyFrame(fm.group(1), int(fm.group(2)), fm.group(3)))
            elif sm and rep.py_frames and rep.py_frames[-1].source is None:
                rep.py_frames[-1].source = sm.group(1)
            elif line.startswith("  "):
                # e.g. "  [12 frames omitted]": kept, reported by callers
                rep.py_extra.append(line)
            else:
                err("bad traceback line %r" % line[:200])
        elif section == "native":
            nm = NATIVE_FRAME_RE.match(line)
            if nm:
                rep.native.append(_native(nm))
            elif line.startswith("  "):
                rep.native_extra.append(line)
            else:
                err("bad native frame line %r" % line[:200])
        else:
            err("unexpected line %r" % line[:200])
        i += 1
    else:
        err("report not terminated at end of log", at=n - 1)

    if rep.end_id is not None and rep.end_id != rep.fields.get("Request-Id"):
        err("end marker id %s differs from Request-Id %s"
            % (rep.end_id, rep.fields.get("Request-Id")))
    if "native" not in seen:
        err("no native stack section")
    for frames in (rep.native, rep.py_native):
        for k, fr in enumerate(frames):
            if fr.index != k:
                err("native frames not numbered 0..n (#%d at position %d)" % (fr.index, k))
                break
    if "py" in seen and not rep.py_note and not rep.py_frames:
        err("empty traceback")
    errors.extend(errs)
    # Keep what could be read, so that one bad line does not hide the rest
    # of the checks; the errors are reported all the same.
    rep.errors = errs
    if rep.fields.get("Request") and REQID_RE.match(rep.fields.get("Request-Id", "")):
        reports.append(rep)
    return i


class Tail(object):
    """Follows a growing log file; records when each record arrived.

    Only whole lines are looked at. `reports` maps the Request line of each
    complete report block to the list of arrival times; `finished` maps the
    request id to the arrival time of its finished line.
    """

    def __init__(self, path, clock):
        self.path = path
        self.clock = clock
        self.pos = 0
        self.partial = b""
        self.cur_request = None
        self.cur_id = None
        self.reports = {}
        self.report_ids = {}
        self.finished = {}
        self.finished_requests = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except (IOError, OSError):
            return
        if not data:
            return
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        now = self.clock()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line == BEGIN:
                self.cur_request = None
                self.cur_id = None
            elif line.startswith("Request:"):
                self.cur_request = line.split(":", 1)[1].strip()
            elif line.startswith("Request-Id:"):
                self.cur_id = line.split(":", 1)[1].strip()
            elif END_RE.match(line):
                if self.cur_request is not None:
                    self.reports.setdefault(self.cur_request, []).append(now)
                    self.report_ids[self.cur_request] = self.cur_id
                self.cur_request = None
            else:
                m = FINISHED_RE.match(line)
                if m:
                    self.finished.setdefault(m.group(1), now)
                    self.finished_requests.setdefault(m.group(3), now)

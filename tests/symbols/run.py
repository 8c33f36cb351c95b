#!/usr/bin/python3
"""Native frames of Debian's stripped interpreter, through a real server.

usage: tests/symbols/run.py BUILD_DIR

gunicorn (sync worker) on /usr/bin/python3.11 with libslowdog.so preloaded
serves /sleep?s=X, which waits in time.sleep: the native stack runs through
static functions of the interpreter (time_sleep, ...) that only a full
symbol table names. Four servers side by side, each in a mount namespace of
its own (unshare -m) where needed:

  visible  python3.11-dbg's debug file under /usr/lib/debug: the frames are
           named, the interpreter is not listed as an object without
           symbols;
  hidden   an empty directory mounted over /usr/lib/debug: the unnamed
           frames show /usr/bin/python3.11+0xOFFSET, and addr2line on the
           debug file names each such offset; the report ends with the line
           for /usr/bin/python3.11, its build id and python3.11-dbg;
  json     the same, as JSON lines: object_offset and without_symbols;
  mini     hidden debug files, and a copy of python3.11 with MiniDebugInfo
           (made here from the debug file, as Fedora makes it) mounted over
           /usr/bin/python3.11: the frames are named from .gnu_debugdata.

Skips (exit 0) where python3.11-dbg, gunicorn, binutils, xz or unshare -m
is missing. Exit status 1 when a check fails.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness  # noqa: E402
from harness import slowlog  # noqa: E402

PY = "/usr/bin/python3.11"
DEBUG = "/usr/lib/debug"

failures = []


def check(cond, what):
    print("%s  %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        failures.append(what)
    return cond


def build_id(path):
    out = subprocess.run(["readelf", "-n", path], stdout=subprocess.PIPE,
                         universal_newlines=True, check=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    return m.group(1) if m else None


def make_minidebuginfo(tmp, dbg):
    """A copy of python3.11 carrying .gnu_debugdata: the functions of its
    debug file that .dynsym lacks, in an xz-packed ELF file."""
    sh = r"""set -e
cd "$1"
nm -D "$2" --format=posix --defined-only | awk '{print $1}' | sort > dynsyms
nm "$3" --format=posix --defined-only | awk '$2 == "T" || $2 == "t" {print $1}' | sort > funcs
comm -13 dynsyms funcs > keep
objcopy -S --remove-section .gdb_index --remove-section .comment \
	--keep-symbols=keep "$3" mini
xz -k mini
cp "$2" python-mini
objcopy --add-section .gnu_debugdata=mini.xz python-mini
"""
    subprocess.run(["sh", "-c", sh, "sh", tmp, PY, dbg], check=True)
    return os.path.join(tmp, "python-mini")


def start(name, tmp, lib, hide, exe=None, fmt=None):
    log = os.path.join(tmp, name + ".log")
    extra = {"SLOWDOG_FORMAT": fmt} if fmt else {}
    env = harness.env(lib, log, "300ms", **extra)
    gun = [PY, "-m", "gunicorn", "--chdir", harness.INTEGRATION,
           "-b", "127.0.0.1:PORT", "-w", "1", "-k", "sync", "--timeout", "60",
           "app:app"]
    if hide or exe:
        mounts = ""
        if hide:
            mounts += 'mount --bind "$1" %s && ' % DEBUG
        if exe:
            mounts += 'mount --bind "$2" %s && ' % PY
        cmd = ["unshare", "-m", "sh", "-c", mounts + 'shift 2 && exec "$@"',
               "sh", os.path.join(tmp, "empty"), exe or "-"] + gun
    else:
        cmd = gun
    return harness.Server(cmd, env, os.path.join(tmp, name + ".out"), log=log,
                          wait=30.0)


def addr2line(dbg, offsets):
    out = subprocess.run(["addr2line", "-f", "-e", dbg] +
                         ["0x%x" % (o - 1) for o in offsets],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout.splitlines()
    return out[0::2]


def text_report(srv, name):
    if not srv.wait_log(r"--- end of slowdog report", 20):
        check(False, "%s: a report (server output: %s)" % (name, srv.output()[-500:]))
        return None
    reps, _fin, errs = slowlog.parse(srv.logtext())
    check(not errs, "%s: the log parses (%s)" % (name, errs[:2]))
    return reps[0] if reps else None


def main():
    build = harness.build_dir()
    lib = harness.library(build)
    bid = build_id(PY)
    dbg = bid and os.path.join(DEBUG, ".build-id", bid[:2], bid[2:] + ".debug")
    for need in ("readelf", "nm", "objcopy", "xz", "addr2line", "unshare"):
        if not shutil.which(need):
            print("skip symbols: no %s" % need)
            return 0
    if not dbg or not os.path.exists(dbg):
        print("skip symbols: no debug file of %s (python3.11-dbg)" % PY)
        return 0
    if not os.path.exists("/usr/lib/python3/dist-packages/gunicorn"):
        print("skip symbols: no gunicorn")
        return 0
    if subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        print("skip symbols: unshare -m not allowed here")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "empty"))
        mini = make_minidebuginfo(tmp, dbg)
        servers = {}
        try:
            servers["visible"] = start("visible", tmp, lib, False)
            servers["hidden"] = start("hidden", tmp, lib, True)
            servers["json"] = start("json", tmp, lib, True, fmt="json")
            servers["mini"] = start("mini", tmp, lib, True, exe=mini)
            harness.at_once(lambda name: servers[name].get("/sleep?s=1.0"),
                            list(servers))
            reps = {n: text_report(servers[n], n)
                    for n in ("visible", "hidden", "mini")}
            servers["json"].wait_log(r'"type":"report"', 20)
            jlog = servers["json"].logtext()
        finally:
            for srv in servers.values():
                srv.stop()

        # Debug file visible: named, nothing to install for the interpreter.
        r = reps["visible"]
        if r:
            names = [f.name for f in r.native if f.obj == PY]
            check("time_sleep" in " ".join(n or "" for n in names),
                  "visible: time_sleep named (%s)" % names[:4])
            check(all(o != PY for o, _i, _h in r.without_symbols),
                  "visible: %s not listed without symbols" % PY)

        # Hidden: OBJ+0xOFF for each unnamed frame, the help line.
        r = reps["hidden"]
        if r:
            unnamed = [f for f in r.native if f.obj == PY and not f.name]
            if check(unnamed and all(f.obj_offset is not None for f in unnamed),
                     "hidden: unnamed interpreter frames show %s+0xOFFSET (%s)"
                     % (PY, r.native[:4])):
                # python3.11 is not position independent: offset = address.
                check(all(f.obj_offset == f.addr for f in unnamed),
                      "hidden: the offsets are the addresses in the file")
                names = addr2line(dbg, [f.obj_offset for f in unnamed])
                # The innermost function, inlined ones too: pysleep is
                # inlined into time_sleep.
                check(len(names) == len(unnamed) and "??" not in names and
                      "pysleep" in names,
                      "hidden: addr2line names every offset (%s)" % names)
            mine = [(i, h) for o, i, h in r.without_symbols if o == PY]
            check(len(mine) == 1 and mine[0][0] == bid and
                  "install python3.11-dbg" in mine[0][1] and
                  bid[2:] + ".debug" in mine[0][1],
                  "hidden: help line names %s, its build id and python3.11-dbg (%s)"
                  % (PY, r.without_symbols))

        # The same in JSON.
        objs = [json.loads(x) for x in jlog.splitlines() if '"type":"report"' in x]
        if check(len(objs) >= 1, "json: a report"):
            nat = objs[0]["native"]
            un = [f for f in nat["frames"] if f["object"] == PY and f["symbol"] is None]
            check(un and all(f.get("object_offset") == int(f["address"], 16) for f in un),
                  "json: object_offset of unnamed frames")
            ws = [w for w in nat.get("without_symbols", []) if w["object"] == PY]
            check(len(ws) == 1 and ws[0]["build_id"] == bid and
                  "python3.11-dbg" in ws[0]["help"],
                  "json: without_symbols names %s (%s)" % (PY, nat.get("without_symbols")))

        # MiniDebugInfo: named without the debug file.
        r = reps["mini"]
        if r:
            frames = [f for f in r.native if f.obj == PY]
            check(any(f.name and f.name.startswith("time_sleep") for f in frames),
                  "mini: time_sleep named from .gnu_debugdata (%s)" % frames[:4])
            check(all(o != PY for o, _i, _h in r.without_symbols),
                  "mini: %s not listed without symbols" % PY)

    print("%d failed" % len(failures) if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

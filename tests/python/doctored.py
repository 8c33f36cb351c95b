#!/usr/bin/python3
"""Doctored interpreters: what slowdog reports for a CPython it was not
tested with, and for one whose _PyRuntime.debug_offsets are damaged.

usage: tests/python/doctored.py BUILD_DIR

Copies of Debian unstable's python3.14 and python3.15 executables (as
scripts/newer-python unpacks them under $SLOWDOG_NEWER_PYTHON, default
/opt/slowdog-python) are patched in their data: the version (Py_Version and
debug_offsets.version) and single fields of the debug offsets, at the
positions src/pyoffsets.c gives. Each copy runs, with libslowdog.so
preloaded, a script whose slow requests sleep (captured without a signal)
and spin (captured with one). Expected:

  - 3.15 patched to say 3.16.0a1 (same layout, newer version): the Python
    frames, each function named, and the line saying the version was not
    tested; the report of a wait for the GIL (a thread holds it in a C
    call) names its holder;
  - 3.14 and 3.15 whose debug offsets move the GIL's last_holder: the
    Python frames, and no GIL line (the GIL's layout is not trusted);
  - 3.14 patched to say 3.16.0a1 (its layout is not 3.15's) and every
    damaged copy: the line "Python frames unavailable: CPython ..." with a
    reason, no Python frame, no crash.

One line per case; exit status 1 when one fails, 0 (with "skip") when no
newer interpreter is there.
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
NEWER = os.environ.get("SLOWDOG_NEWER_PYTHON", "/opt/slowdog-python")

APP = r'''
import ctypes, sys, threading, time
lib = ctypes.CDLL(None)
lib.slowdog_begin.argtypes = [ctypes.c_char_p]
held = ctypes.PyDLL(None)  # its calls keep the GIL

def doctored_sleep():
    time.sleep(0.5)

def doctored_spin():
    end = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < end:
        n += 1
    return n

def run(name, fn):
    lib.slowdog_begin(name.encode())
    fn()
    lib.slowdog_end()

def doctored_holder():
    held.usleep(600000)

def doctored_gilwait():
    t = threading.Thread(target=doctored_holder)
    t.start()
    n = 0
    while t.is_alive():
        n += 1
    return n

run("sleep", doctored_sleep)
run("spin", doctored_spin)
run("gilwait", doctored_gilwait)
print("app done")
'''

CRASH = ["Segmentation fault", "core dumped", "Fatal Python error", "Aborted",
         "SIGSEGV", "stack smashing", "double free"]


def elf_symbols(path, names):
    """File offsets of dynamic symbols `names` in an ELF executable."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise SystemExit("%s: not a 64-bit ELF file" % path)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3a)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    sects = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
             for i in range(shnum)]
    dynsym = [s for s in sects if s[1] == 11][0]  # SHT_DYNSYM
    strtab = sects[dynsym[6]]
    segs = [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
            for i in range(phnum)]
    found = {}
    for i in range(dynsym[5] // 24):
        name_off, info, other, shndx, value, size = struct.unpack_from(
            "<IBBHQQ", data, dynsym[4] + i * 24)
        end = data.index(b"\0", strtab[4] + name_off)
        name = data[strtab[4] + name_off:end].decode()
        if name in names and value:
            for p_type, flags, off, vaddr, paddr, filesz, memsz, align in segs:
                if p_type == 1 and vaddr <= value < vaddr + filesz:
                    found[name] = value - vaddr + off
    missing = set(names) - set(found)
    if missing:
        raise SystemExit("%s: no %s in its data" % (path, ", ".join(sorted(missing))))
    return found


def dbg_positions(minor):
    """name -> position inside _Py_DebugOffsets, from src/pyoffsets.c."""
    with open(os.path.join(TOP, "src", "pyoffsets.c")) as f:
        text = f.read()
    m = re.search(r"py_offsets_3%d = \{.*?\.dbg = \{(.*?)\}," % minor, text, re.S)
    return {k: int(v) for k, v in re.findall(r"\.(\w+) = (-?\d+),", m.group(1))}


def doctor(src, dst, minor, patches):
    """Copy src to dst and apply patches: (what, position in
    _Py_DebugOffsets or "Py_Version", function of the old uint64)."""
    shutil.copy2(src, dst)
    syms = elf_symbols(src, ["_PyRuntime", "Py_Version"])
    pos = dbg_positions(minor)
    with open(dst, "r+b") as f:
        for where, fn in patches:
            if where == "Py_Version":
                at, size = syms["Py_Version"], 4
            elif where == "cookie":
                at, size = syms["_PyRuntime"], 8
            elif where == "all":
                f.seek(syms["_PyRuntime"] + 8)
                f.write(fn(pos["struct_size"] - 8))
                continue
            else:
                at, size = syms["_PyRuntime"] + pos[where], 8
            f.seek(at)
            old = f.read(size)
            new = fn(int.from_bytes(old, "little"))
            f.seek(at)
            f.write(new.to_bytes(size, "little") if isinstance(new, int) else new)


def run(build, root, exe, minor, tmp):
    log = os.path.join(tmp, "log")
    if os.path.exists(log):
        os.unlink(log)
    app = os.path.join(tmp, "app.py")
    with open(app, "w") as f:
        f.write(APP)
    loader = os.path.join(root, "usr", "lib64", "ld-linux-x86-64.so.2")
    libs = ":".join([os.path.join(root, "usr", "lib", "x86_64-linux-gnu"),
                     "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"])
    env = dict(os.environ, PYTHONHOME=os.path.join(root, "usr"),
               SLOWDOG_THRESHOLD="150ms", SLOWDOG_LOG=log,
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("LD_PRELOAD", None)
    r = subprocess.run([loader, "--library-path", libs, "--preload",
                        os.path.join(build, "libslowdog.so"), exe, app],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=60, universal_newlines=True)
    try:
        with open(log) as f:
            text = f.read()
    except OSError:
        text = ""
    return r.returncode, r.stdout, text


def reports(text):
    return re.findall(r"^--- slowdog: slow request ---$.*?^--- end of slowdog report",
                      text, re.S | re.M)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    build = os.path.abspath(sys.argv[1])
    roots = {}
    for minor in (14, 15):
        root = os.path.join(NEWER, "3.%d" % minor, "root")
        exe = os.path.join(root, "usr", "bin", "python3.%d" % minor)
        if os.path.exists(exe):
            roots[minor] = (root, exe)
    if 15 not in roots:
        print("skip doctored interpreters: no CPython 3.15 in %s "
              "(scripts/newer-python 3.14 3.15)" % NEWER)
        return 0

    v316 = 0x031000a1  # 3.16.0a1
    newer = lambda old: v316  # noqa: E731
    cases = [
        ("3.15 as 3.16.0a1", 15, [("Py_Version", newer), ("version", newer)], True),
    ]
    for minor in sorted(roots):
        m = "3.%d" % minor
        cases += [
            (m + ": GIL holder moved", minor,
             [("is_gil_holder", lambda old: old + 8)], "nogil"),
            (m + ": cookie wiped", minor, [("cookie", lambda old: b"\0" * 8)], False),
            (m + ": debug version 3.13", minor,
             [("version", lambda old: (old & 0xffff) | 0x030d0000)], False),
            (m + ": free-threaded flag", minor, [("free_threaded", lambda old: 1)], False),
            (m + ": current_frame moved", minor,
             [("ts_current_frame", lambda old: old + 8)], False),
            (m + ": thread list moved", minor,
             [("is_threads_head", lambda old: old + 8)], False),
            (m + ": native_thread_id moved", minor,
             [("ts_native_thread_id", lambda old: old - 8)], False),
            (m + ": previous = executable", minor,
             [("fr_previous", lambda old: 0)], False),
            (m + ": co_name moved", minor, [("co_name", lambda old: old + 8)], False),
            (m + ": ob_type moved", minor, [("ob_type", lambda old: 0)], False),
            (m + ": frame size huge", minor, [("fr_size", lambda old: 1 << 40)], False),
            (m + ": offsets garbage", minor,
             [("all", lambda n: bytes((i * 37 + 11) & 0xff for i in range(n)))], False),
            (m + ": offsets all ones", minor, [("all", lambda n: b"\xff" * n)], False),
        ]
    if 14 in roots:
        cases.append(("3.14 as 3.16.0a1 (3.14 layout)", 14,
                      [("Py_Version", newer), ("version", newer)], False))

    fail = 0
    with tempfile.TemporaryDirectory() as tmp:
        for label, minor, patches, frames in cases:
            root, exe = roots[minor]
            dst = os.path.join(tmp, "python3.%d" % minor)
            doctor(exe, dst, minor, patches)
            rc, out, log = run(build, root, dst, minor, tmp)
            reps = reports(log)
            bad = []
            if rc != 0 or "app done" not in out:
                bad.append("exit %d: %s" % (rc, out[-500:]))
            bad += ["crash: " + c for c in CRASH if c in out or c in log]
            if len(reps) != 3:
                bad.append("%d reports" % len(reps))
            for rep, fn in zip(reps, ("doctored_sleep", "doctored_spin", "doctored_gilwait")):
                gil = re.search(r"^GIL: +(.*)$", rep, re.M)
                if frames:
                    if not re.search(r'^  File ".*app\.py", line \d+, in %s$' % fn, rep, re.M):
                        bad.append("no frame of %s" % fn)
                    if frames is True and "[CPython 3.16.0a1 is newer than slowdog was " \
                            "tested with (3.15)" not in rep:
                        bad.append("no line saying 3.16.0a1 was not tested")
                    if "unavailable" in rep:
                        bad.append("an unavailable line")
                    if fn != "doctored_gilwait" or frames == "nogil":
                        if gil:
                            bad.append("a GIL line in %s: %s" % (fn, gil.group(1)))
                    elif not (gil and re.match(r"waiting, held by thread \d+ \(.*\), "
                                               r"serving no request$", gil.group(1)) and
                              re.search(r"^Holder: +doctored_holder \(", rep, re.M)):
                        bad.append("no GIL line naming the holder: %s"
                                   % (gil.group(1) if gil else None))
                else:
                    m = re.search(r"^Python frames unavailable: CPython 3\.1\d\S* \(.+\)$",
                                  rep, re.M)
                    if not m:
                        bad.append("no unavailable line with a reason")
                    if re.search(r'^ *File "', rep, re.M):
                        bad.append("a Python frame")
                    if gil:
                        bad.append("a GIL line")
            why = ""
            for rep in reps[:1]:
                m = re.search(r"^(Python frames unavailable: .*|  \[CPython .*\])$", rep, re.M)
                why = m.group(1).strip() if m else ""
            print("%s  %-42s %s" % ("FAIL" if bad else "ok  ", label, why))
            for b in bad:
                print("      " + b)
            if bad and reps:
                print("      " + reps[0].replace("\n", "\n      ")[:3000])
            fail += bool(bad)
    print("%d cases, %d failed" % (len(cases), fail))
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())

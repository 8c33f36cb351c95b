#!/usr/bin/env python3
"""Checks src/aio.c's asyncio layouts against every CPython found.

    aio_layout.py [SRC_DIR]

Reads the table `layouts` of src/aio.c, then runs itself (--probe ROW)
in each interpreter (pyenv's 3.8-3.13, 3.14 and 3.15 of
scripts/newer-python), which builds a suspended task awaiting a chain of
coroutines and an instance with attributes, and reads them through the
row's offsets (from its own memory, /proc/self/mem): every field must
lead where the interpreter's own introspection (cr_frame, cr_await,
sys.modules, ...) says. Exit status 1 on any mismatch.
"""
import glob
import json
import os
import re
import subprocess
import sys

FIELDS = ["minor", "is_modules", "dbg_is_modules", "ht_cached_keys", "managed",
          "values_at", "dict_new", "task_coro", "coro_frame", "frame_state",
          "st_suspended", "st_yield_from", "st_yield_from2", "fr_back", "fr_code",
          "fr_locals", "fr_stack", "fr_depth", "stack_kind", "await_below",
          "tag_mask", "co_nlocals", "long_tag", "tuple_items"]
CONST = {"STACK_PTR": 1, "STACK_DEPTH": 2, "STACK_INDEX": 3, "NOTAG": -1,
         "~(uintptr_t)3": -4, "false": 0, "true": 1}


def table(src):
    text = open(os.path.join(src, "aio.c")).read()
    body = re.search(r"static const struct aio_layout layouts\[\] = \{(.*?)\n\};", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    rows = {}
    for m in re.finditer(r"\{([^{}]*)\}", body):
        vals = [v.strip() for v in m.group(1).split(",")]
        vals = [CONST[v] if v in CONST else int(v) for v in vals]
        if len(vals) != len(FIELDS):
            raise SystemExit("aio.c: a row of %d fields, want %d" % (len(vals), len(FIELDS)))
        row = dict(zip(FIELDS, vals))
        rows[row["minor"]] = row
    return rows


# ---- inside the interpreter under test ----

def probe(row):
    import asyncio
    import ctypes
    import struct

    mem = os.open("/proc/self/mem", os.O_RDONLY)

    def ptr(a):
        return struct.unpack("<Q", os.pread(mem, 8, a))[0]

    def i32(a):
        return struct.unpack("<i", os.pread(mem, 4, a))[0]

    def i8(a):
        return struct.unpack("<b", os.pread(mem, 1, a))[0]

    V = sys.version_info[:2]
    bad = []
    tag = 0xffffffffffffffff if row["tag_mask"] == -1 else 0xffffffffffffffff & ~3

    def want(name, ok, got=""):
        if not ok:
            bad.append("%s %s" % (name, got))

    # sys.modules in the interpreter state
    ctypes.pythonapi.PyThreadState_Get.restype = ctypes.c_void_p
    interp = ptr(ctypes.pythonapi.PyThreadState_Get() + 16)
    want("is_modules", ptr(interp + row["is_modules"]) == id(sys.modules))
    if row["dbg_is_modules"] >= 0:
        rt = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
        want("dbg_is_modules (cookie)", os.pread(mem, 8, rt) == b"xdebugpy")
        want("dbg_is_modules", ptr(rt + row["dbg_is_modules"]) == row["is_modules"],
             ptr(rt + row["dbg_is_modules"]))

    # an instance's attributes, as aio.c's attr_get reads them
    class K(object):
        def __init__(self):
            self.alpha = 1
            self.beta = "x"
    k = K()
    T = type(k)
    keys = ptr(id(T) + row["ht_cached_keys"])
    # entries of the shared keys (3.11+, unicode kind): after the indices
    log2_index = (ptr(keys + 8) >> 8) & 0xff if row["dict_new"] else None
    if row["managed"]:
        entries = keys + 32 + (1 << log2_index)
        names = [ptr(entries + 16 * i) for i in range(2)]
        want("ht_cached_keys", names == [id("alpha"), id("beta")])
        if row["managed"] == 11:
            values = ptr(id(k) - 32)
        elif row["managed"] == 12:
            values = ptr(id(k) - 24) + 1
        else:
            values = id(k) + T.__basicsize__
        want("values_at", ptr(values + row["values_at"] + 8) == id("x"))
    else:
        want("managed", T.__dictoffset__ > 0 and ptr(id(k) + T.__dictoffset__) == id(k.__dict__))
    want("long_tag", ptr(id(12345) + 16) == (8 if row["long_tag"] else 1))
    pair = ("alpha", "beta")
    want("tuple_items", ptr(id(pair) + row["tuple_items"]) == id("alpha") and
         ptr(id(pair) + row["tuple_items"] + 8) == id("beta"))

    async def leaf(fut):
        await fut

    async def mid(fut, scope):
        a = b = 1
        cv = 2

        def inner():
            return cv
        await leaf(fut)

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        coro = mid(fut, {"client": ("127.0.0.1", 5555)})
        t = loop.create_task(coro)
        await asyncio.sleep(0)
        if row["task_coro"] >= 0:
            want("task_coro", ptr(id(t) + row["task_coro"]) == id(coro))
        if V >= (3, 11):
            f = id(coro) + row["coro_frame"]
            want("coro_frame", ptr(id(coro.cr_frame) + 24) == f)
            want("st_yield_from", i8(id(coro) + row["frame_state"]) == row["st_yield_from"],
                 i8(id(coro) + row["frame_state"]))
        else:
            f = ptr(id(coro) + row["coro_frame"])
            want("coro_frame", f == id(coro.cr_frame))
            if row["frame_state"] >= 0:
                want("frame_state", i8(f + row["frame_state"]) == row["st_suspended"])
        code = coro.cr_code
        want("fr_code", ptr(f + row["fr_code"]) & tag == id(code))
        want("fr_locals", ptr(f + row["fr_locals"]) & tag == id(fut))
        n = i32(id(code) + row["co_nlocals"])
        want("co_nlocals", n == (code.co_nlocals if V < (3, 11) else
                                 code.co_nlocals + len(code.co_cellvars) - sum(
                                     1 for c in code.co_cellvars if c in code.co_varnames) +
                                 len(code.co_freevars)), n)
        base = f + row["fr_locals"]
        kind = row["stack_kind"]
        if kind == 1:
            slot = ptr(f + row["fr_stack"]) - 8 * row["await_below"]
        elif kind == 2:
            slot = ptr(f + row["fr_stack"]) + 8 * (i32(f + row["fr_depth"]) - 1)
        else:
            slot = base + 8 * (i32(f + row["fr_stack"]) - 1)
        want("fr_stack", ptr(slot) & tag == id(coro.cr_await))
        # the next frame back, in the running chain: the caller of this one
        if V >= (3, 11):
            want("fr_back", True)
        else:
            want("fr_back", ptr(id(sys._getframe()) + row["fr_back"]) == id(sys._getframe(1)))
        fut.set_result(1)
        await t

    asyncio.run(main())

    # a generator suspended at a plain yield
    def gen():
        yield 1
    g = gen()
    next(g)
    if V >= (3, 11):
        want("st_suspended", i8(id(g) + row["frame_state"]) == row["st_suspended"],
             i8(id(g) + row["frame_state"]))
    print(json.dumps(bad))


def interpreters():
    out = []
    for d in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*"))):
        m = re.match(r"3\.(\d+)\.", os.path.basename(d))
        if m and 8 <= int(m.group(1)) <= 13:
            out.append((int(m.group(1)), os.path.join(d, "bin", "python")))
    newer = os.environ.get("SLOWDOG_NEWER_PYTHON", "/opt/slowdog-python")
    for minor in (14, 15):
        py = os.path.join(newer, "3.%d" % minor, "bin", "python3.%d" % minor)
        if os.path.exists(py):
            out.append((minor, py))
    return out


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--probe":
        probe(json.loads(sys.argv[2]))
        return
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
    rows = table(src)
    failed = 0
    for minor, py in interpreters():
        if minor not in rows:
            print("FAIL 3.%d: no row in aio.c" % minor)
            failed += 1
            continue
        r = subprocess.run([py, os.path.abspath(__file__), "--probe", json.dumps(rows[minor])],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = r.stdout.decode(errors="replace").strip().splitlines()
        try:
            bad = json.loads(out[-1])
        except (ValueError, IndexError):
            bad = ["probe failed: %s" % out[-5:]]
        if bad:
            failed += 1
            print("FAIL 3.%d (%s): %s" % (minor, py, "; ".join(bad)))
        else:
            print("ok   3.%d (%s)" % (minor, py))
    print("asyncio layouts: %s" % ("all agree" if not failed else "%d disagree" % failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

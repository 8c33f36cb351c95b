"""slowdog's Python frame walker against CPython's own view of the stack.

Run by tests/python/run.sh under every interpreter; SD_PYWALK_SO names the
test shared object (pywalk_test.c + src/python.c, pyoffsets.c, mem.c).
Every comparison is exact: file, line, function and order, innermost first,
against the f_back chain and traceback.extract_stack().

SD_PYWALK_EXPECT_UNSUPPORTED=3.7 runs only the check that an unsupported
interpreter is refused with the right message.
"""

import asyncio
import ctypes
import gc
import importlib
import os
import random
import sys
import tempfile
import threading
import time
import traceback
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SO = os.environ.get("SD_PYWALK_SO") or os.path.join(HERE, "pywalk_test.so")

# PyDLL keeps the GIL across the call, so the frames walked cannot change;
# CDLL releases it (for the stress, where the target must run meanwhile).
lib = ctypes.PyDLL(SO)
clib = ctypes.CDLL(SO)
for _l in (lib, clib):
    _l.sd_test_init.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _l.sd_test_walk.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_int]
    _l.sd_test_walk_thread.argtypes = [ctypes.c_long, ctypes.c_ulong,
                                       ctypes.c_char_p, ctypes.c_int,
                                       ctypes.c_int]
    _l.sd_test_lines.argtypes = [ctypes.c_size_t, ctypes.POINTER(ctypes.c_int),
                                 ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    _l.sd_test_signal_stress.argtypes = [ctypes.c_long, ctypes.c_int,
                                         ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_long),
                                         ctypes.c_char_p, ctypes.c_int]
    _l.sd_test_is_eval.argtypes = [ctypes.c_char_p]
    _l.sd_test_tstate_fast.argtypes = []
    _l.sd_test_stress.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_int,
                                  ctypes.c_char_p,
                                  ctypes.POINTER(ctypes.c_long),
                                  ctypes.c_char_p, ctypes.c_int]

BUFSIZE = 4 << 20
# Whether dladdr names the eval loop's native frames here (this module runs
# in one): not in the stripped executables of Debian's 3.14+.
EVAL_NAMED = lib.sd_test_native_evals() > 0
_buf = ctypes.create_string_buffer(BUFSIZE)
PY_FRAME_ENTRY = 1
FILE_MAX, FUNC_MAX = 256, 128


class Walk:
    def __init__(self, rc, buf):
        if rc < 0:
            raise AssertionError("walk failed: %d" % rc)
        lines = buf.value.decode("utf-8").split("\n")
        self.total, self.n, self.head, damaged = map(int, lines[0][1:].split())
        self.damaged = bool(damaged)
        self.frames = []
        for line in lines[1:self.n + 1]:
            file, lineno, func, flags = line.split("\t")
            self.frames.append((file, int(lineno), func, int(flags)))

    def triples(self):
        return [f[:3] for f in self.frames]

    def flags(self):
        return [f[3] for f in self.frames]


def walk(max=4096, reader=1):
    rc = lib.sd_test_walk(_buf, BUFSIZE, max, reader)
    return Walk(rc, _buf)


def walk_thread(t, max=4096, buf=None):
    buf = buf or _buf
    rc = lib.sd_test_walk_thread(t.native_id if hasattr(t, "native_id") else 0,
                                 t.ident, buf, len(buf), max)
    return Walk(rc, buf)


def cut(s, cap):
    """What the walker keeps of s: UTF-8, whole characters, < cap bytes."""
    # Lone surrogates (undecodable bytes of a file name) become "?".
    return s.encode("utf-8", "replace")[:cap - 1].decode("utf-8", "ignore")


def chain(frame):
    """The stack from frame outwards as the walker should see it."""
    out = []
    while frame is not None:
        out.append((cut(frame.f_code.co_filename, FILE_MAX),
                     frame.f_lineno or 0,
                     cut(frame.f_code.co_name, FUNC_MAX)))
        frame = frame.f_back
    return out


def expected(frame):
    exp = chain(frame)
    tb = [(cut(fs.filename, FILE_MAX), fs.lineno or 0, cut(fs.name, FUNC_MAX))
          for fs in reversed(traceback.extract_stack(frame))]
    assert exp == tb, (exp, tb)
    return exp


def snap(max=4096, reader=1):
    # One line: the walk and the expectation see this frame at one line.
    rc, exp = lib.sd_test_walk(_buf, BUFSIZE, max, reader), expected(sys._getframe())
    return Walk(rc, _buf), exp


def snap_mapped(max=4096):
    rc, exp = lib.sd_test_walk(_buf, BUFSIZE, max, 0), expected(sys._getframe())
    return Walk(rc, _buf), exp


def snap_thread(max=4096):
    """snap() through py_tstate_find, as the watchdog finds a thread."""
    me = threading.current_thread()
    rc, exp = lib.sd_test_walk_thread(me.native_id, me.ident, _buf, BUFSIZE, max), expected(sys._getframe())
    return Walk(rc, _buf), exp


def snap_evals(max=4096):
    rc, nev = lib.sd_test_walk(_buf, BUFSIZE, max, 1), lib.sd_test_native_evals()
    return Walk(rc, _buf), nev


class WalkerCase(unittest.TestCase):
    def check(self, res):
        w, exp = res
        self.assertFalse(w.damaged)
        self.assertEqual(w.total, len(exp))
        got = w.triples()
        if w.n == w.total:
            self.assertEqual(w.head, w.n)
            self.assertEqual(got, exp)
        else:
            tail = w.n - w.head
            self.assertEqual(got[:w.head], exp[:w.head])
            self.assertEqual(got[w.head:], exp[len(exp) - tail:])
        return w


class TestInit(unittest.TestCase):
    def test_init(self):
        msg = ctypes.create_string_buffer(256)
        self.assertEqual(lib.sd_test_init(msg, 256), 1)
        version, unavailable, present = msg.value.decode().split("|")
        self.assertEqual(version.split(".")[:3],
                         [str(x) for x in sys.version_info[:3]])
        self.assertEqual(unavailable, "")
        self.assertEqual(present, "1")

    def test_tstate_fast(self):
        # The handler reads the thread's own state from CPython's key,
        # found at the first call: the same as CPython's answer, on the
        # main thread and on a new one. 3.15 keeps it in a thread-local
        # variable, no key: the handler asks CPython (0), rightly.
        want = 0 if sys.version_info >= (3, 15) else 1
        self.assertEqual(lib.sd_test_tstate_fast(), want)
        got = []
        t = threading.Thread(target=lambda: got.append(lib.sd_test_tstate_fast()))
        t.start()
        t.join()
        self.assertEqual(got, [want])

    def test_eval_symbols(self):
        self.assertTrue(lib.sd_test_is_eval(b"_PyEval_EvalFrameDefault"))
        self.assertTrue(lib.sd_test_is_eval(b"_PyEval_EvalFrameDefault.cold"))
        for name in (b"_PyEval_EvalFrame", b"_PyEval_EvalCode",
                     b"function_code_fastcall", b"PyEval_EvalFrameEx",
                     b"_PyEval_EvalFrameDefaultX", b""):
            self.assertFalse(lib.sd_test_is_eval(name), name)


def a():
    return b()


def b():
    return c()


def c():
    return snap()


def rec(n, fn=snap, max=4096):
    # Positional arguments only: a ** call would not be inlined on 3.11+.
    if n == 0:
        return fn(max)
    return rec(n - 1, fn, max)


def gen_snap():
    yield snap()


def gen_outer():
    yield from gen_snap()


async def co_inner():
    await asyncio.sleep(0)
    return snap()


async def co_outer():
    return await co_inner()


class K:
    def method(self):
        return snap()

    @classmethod
    def cmethod(cls):
        return snap()

    @staticmethod
    def smethod():
        return snap()

    @property
    def prop(self):
        return snap()


class TestWalk(WalkerCase):
    def test_nested(self):
        self.check(a())

    def test_mapped_reader(self):
        self.check(rec(5, snap_mapped))
        self.check(snap(reader=0))

    def test_recursion_150(self):
        w = self.check(rec(150))
        self.assertEqual(w.n, w.total)

    def test_recursion_2000_cut(self):
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(10000)
        try:
            for max in (64, 65, 1, 2, 3):
                w = self.check(rec(2000, max=max))
                self.assertEqual(w.n, max)
                self.assertEqual(w.head, max - max // 2)
                self.assertGreater(w.total, 2000)
            w = self.check(rec(2000))
            self.assertEqual(w.n, w.total)
        finally:
            sys.setrecursionlimit(old)

    def test_max_zero(self):
        w, exp = rec(3, max=0)
        self.assertEqual((w.n, w.head, w.total, w.damaged), (0, 0, len(exp), False))

    def test_lambda(self):
        self.check((lambda: snap())())

    def test_comprehensions(self):
        self.check([snap() for _ in range(1)][0])
        self.check({k: snap() for k in range(1)}[0])
        self.check(list(snap() for _ in range(1))[0])

    def test_generator(self):
        self.check(next(gen_snap()))
        self.check(next(gen_outer()))
        for res in gen_outer():
            self.check(res)

    def test_coroutine(self):
        self.check(asyncio.run(co_outer()))

    def test_exec(self):
        ns = {"snap": snap}
        exec(compile("def f():\n    return snap()\nr = f()\n", "<string>", "exec"), ns)
        self.check(ns["r"])
        ns = {"snap": snap}
        exec("r = snap()", ns)
        self.check(ns["r"])
        self.check(eval("snap()", {"snap": snap}))
        ns = {"snap": snap}
        exec(compile("r = snap()", "sur\udcffrogate \u20ac.py", "exec"), ns)
        w = self.check(ns["r"])
        self.assertEqual(w.frames[1][0], "sur?rogate \u20ac.py")

    def test_methods(self):
        k = K()
        self.check(k.method())
        self.check(K.cmethod())
        self.check(K.smethod())
        self.check(k.prop)

    def test_called_from_c(self):
        self.check(list(map(lambda _: snap(), [0]))[0])
        box = []
        sorted([1, 2], key=lambda x: box.append(snap()) or x)
        self.check(box[0])

    def test_other_thread(self):
        box = []
        t = threading.Thread(target=lambda: box.append(rec(7)))
        t.start()
        t.join()
        self.check(box[0])

    def test_unicode_names(self):
        with tempfile.TemporaryDirectory() as d:
            src = {
                "modülé_日本": "snap = __import__('builtins')._sd_snap\n"
                               "def fünc():\n    return snap()\n"
                               "def 日本():\n    return fünc()\n"
                               "def 𠀀x():\n    return 日本()\n"
                               "class Ça:\n    def mé(self):\n        return 𠀀x()\n",
                "café": "snap = __import__('builtins')._sd_snap\n"
                        "def été():\n    return snap()\n",
                "𠀀mod": "snap = __import__('builtins')._sd_snap\n"
                         "def g():\n    return snap()\n",
                # Longer than both limits: cut on a character boundary.
                "é" * 120: "snap = __import__('builtins')._sd_snap\n"
                           "def " + "日" * 100 + "():\n    return snap()\n"
                           "def " + "é" * 100 + "():\n    return " + "日" * 100 + "()\n",
            }
            deep = os.path.join(d, "d" * 60)
            os.mkdir(deep)
            for name, text in src.items():
                with open(os.path.join(deep, name + ".py"), "w", encoding="utf-8") as f:
                    f.write(text)
            sys.path.insert(0, deep)
            import builtins
            builtins._sd_snap = snap
            try:
                importlib.invalidate_caches()
                m = importlib.import_module("modülé_日本")
                w = self.check(m.Ça().mé())
                self.assertEqual([f[2] for f in w.frames[:5]],
                                 ["snap", "fünc", "日本", "𠀀x", "mé"])
                self.check(importlib.import_module("café").été())
                self.check(importlib.import_module("𠀀mod").g())
                m = importlib.import_module("é" * 120)
                w = self.check(getattr(m, "é" * 100)())
                self.assertLess(len(w.frames[1][0].encode()), FILE_MAX)
                self.assertGreater(len(w.frames[1][0].encode()), FILE_MAX - 4)
                self.assertEqual(w.frames[1][2], "日" * 42)
                self.assertEqual(w.frames[2][2], "é" * 63)
            finally:
                sys.path.remove(deep)
                del builtins._sd_snap

    def test_sleeping_thread(self):
        stop = threading.Event()
        started = threading.Event()

        def sleeper_inner():
            started.set()
            while not stop.is_set():
                time.sleep(0.05)

        def sleeper():
            sleeper_inner()

        t = threading.Thread(target=sleeper)
        t.start()
        try:
            started.wait()
            ok = 0
            for _ in range(200):
                f = sys._current_frames()[t.ident]
                if f.f_code.co_name != "sleeper_inner":
                    time.sleep(0.001)
                    continue
                exp1, w, exp2 = chain(f), walk_thread(t), chain(f)
                if exp1 != exp2:
                    continue
                self.check((w, exp1))
                self.assertEqual(w.frames[0][2], "sleeper_inner")
                ok += 1
                if ok == 20:
                    break
            self.assertEqual(ok, 20)
        finally:
            stop.set()
            t.join()

    def test_idle_state_on_same_thread(self):
        """A thread state made on this thread but not in use: up to 3.11,
        threading.Thread.start makes the new thread's state with the
        starter's ids, which it keeps until the new thread runs. It comes
        first in the list and must not hide the state that runs."""
        api = ctypes.pythonapi
        api.PyInterpreterState_Main.restype = ctypes.c_void_p
        api.PyThreadState_New.restype = ctypes.c_void_p
        api.PyThreadState_New.argtypes = [ctypes.c_void_p]
        api.PyThreadState_Clear.argtypes = [ctypes.c_void_p]
        api.PyThreadState_Delete.argtypes = [ctypes.c_void_p]
        ts = api.PyThreadState_New(api.PyInterpreterState_Main())
        self.assertTrue(ts)
        try:
            self.check(snap_thread())
        finally:
            api.PyThreadState_Clear(ts)
            api.PyThreadState_Delete(ts)

    def test_no_thread_state(self):
        self.assertEqual(lib.sd_test_walk_thread(0, 0, _buf, BUFSIZE, 16), -3)


class TestEntryFlags(unittest.TestCase):
    """ENTRY marks where one native _PyEval_EvalFrameDefault's frames end."""

    def check_entries(self, res):
        w, nev = res
        self.assertFalse(w.damaged)
        self.assertEqual(w.n, w.total)
        flags = w.flags()
        # The outermost frame always ends a group.
        self.assertTrue(flags[-1] & PY_FRAME_ENTRY)
        # Counted only where dladdr can name the eval loop.
        if EVAL_NAMED:
            self.assertEqual(sum(1 for f in flags if f & PY_FRAME_ENTRY), nev)
        if sys.version_info < (3, 11):
            self.assertTrue(all(f & PY_FRAME_ENTRY for f in flags))
        return flags

    def test_plain(self):
        self.check_entries(rec(5, snap_evals))

    def test_through_c(self):
        flags = self.check_entries(list(map(lambda _: rec(3, snap_evals), [0]))[0])
        if sys.version_info >= (3, 11):
            # rec x4 and the lambda run in the eval loop that map() entered.
            self.assertEqual([bool(f & PY_FRAME_ENTRY) for f in flags[:6]],
                             [False] * 5 + [True])

    def test_generators_and_coroutines(self):
        def g():
            yield rec(2, snap_evals)

        for res in g():
            self.check_entries(res)

        async def co():
            await asyncio.sleep(0)
            return snap_evals()

        self.check_entries(asyncio.run(co()))


def code_objects(limit):
    seen, out = set(), []
    todo = [o.__code__ for o in gc.get_objects()
            if isinstance(o, types.FunctionType)]
    while todo and len(out) < limit:
        co = todo.pop()
        if id(co) in seen:
            continue
        seen.add(id(co))
        out.append(co)
        todo.extend(x for x in co.co_consts if isinstance(x, types.CodeType))
    return out


class TestLines(unittest.TestCase):
    def test_line_tables(self):
        """Every instruction of thousands of code objects gives the line
        CPython's own PyCode_Addr2Line gives."""
        addr2line = ctypes.pythonapi.PyCode_Addr2Line
        addr2line.argtypes = [ctypes.py_object, ctypes.c_int]
        addr2line.restype = ctypes.c_int
        import dis, json, email.message, unittest.mock  # noqa: F401, E401
        n = 0
        for co in code_objects(3000):
            offs = [-1] + list(range(0, len(co.co_code), 2))
            offs = offs[:4096]
            addrs = (ctypes.c_int * len(offs))(*offs)
            lines = (ctypes.c_int * len(offs))()
            self.assertEqual(lib.sd_test_lines(id(co), addrs, lines, len(offs)), 0)
            for off, got in zip(offs, lines):
                want = max(addr2line(co, off), 0)
                if got != want:
                    self.fail("%s %s:%d offset %d: %d != %d" % (
                        co.co_name, co.co_filename, co.co_firstlineno, off,
                        got, want))
                n += 1
        self.assertGreater(n, 10000)


def churn_leaf(n):
    if n % 7 == 0:
        try:
            raise ValueError(n)
        except ValueError:
            pass
    return n


def churn_gen(n):
    for i in range(n):
        yield churn_leaf(i)


def churn_rec(n):
    if n <= 0:
        return sum(churn_gen(3)) + sum([churn_leaf(i) for i in range(2)])
    return churn_rec(n - 1)


async def churn_co(n):
    return churn_rec(n)


def churn(stop):
    r = random.Random(1)
    while not stop.is_set():
        # Deep enough to cross 3.11+'s 16 KiB frame stack chunks, mapped
        # and unmapped all the time: the walk must keep up with that.
        k = r.randrange(200)
        if k % 5 == 0:
            c = churn_co(k)
            try:
                c.send(None)
            except StopIteration:
                pass
        else:
            churn_rec(k)
            list(map(churn_leaf, range(3)))


STRESS_NAMES = {"churn_leaf", "churn_gen", "churn_rec", "churn_co", "churn",
                "<listcomp>", "run", "_bootstrap", "_bootstrap_inner",
                "is_set", "randrange", "_randbelow",
                "_randbelow_with_getrandbits"}


class TestStress(unittest.TestCase):
    def stress(self, label, fn):
        """Runs fn(thread, names, counts, bad, badcap) against a thread
        churning through calls, generators, coroutines and exceptions."""
        stop = threading.Event()
        t = threading.Thread(target=churn, args=(stop,))
        t.start()
        counts = (ctypes.c_long * 5)()
        bad = ctypes.create_string_buffer(1 << 16)
        try:
            time.sleep(0.02)
            rc = fn(t, "\n".join(sorted(STRESS_NAMES)).encode(), counts, bad,
                    len(bad))
        finally:
            stop.set()
            t.join()
        self.assertEqual(rc, 0)
        plausible, damaged, implausible, frames, missing = counts
        if implausible:
            self.fail("implausible walk:\n" + bad.value.decode("utf-8", "replace"))
        self.assertEqual(missing, 0)
        self.assertGreater(frames, 3 * plausible)
        sys.stderr.write("%s: %d plausible, %d damaged, %d frames\n"
                         % (label, plausible, damaged, frames))
        return plausible

    def test_walk_running_thread(self):
        """Another thread walks it while it runs (the watchdog's reader);
        CDLL releases the GIL so that it does run."""
        plausible = self.stress("stress", lambda t, *rest: clib.sd_test_stress(
            t.native_id, t.ident, 3000, *rest))
        # Racing a running thread, many walks meet freed frames reused
        # (cycles on 3.8-3.10, non-code objects on 3.11+): damaged.
        self.assertGreater(plausible, 500)

    def test_walk_in_signal_handler(self):
        """The thread walks itself in a signal handler (mem_read_mapped),
        stopped wherever it was."""
        plausible = self.stress("signal", lambda t, *rest: clib.sd_test_signal_stress(
            t.native_id, 1500, *rest))
        # Only an eval loop caught half entered can fail (3.11, 3.12).
        self.assertGreater(plausible, 1490)


class TestUnsupported(unittest.TestCase):
    def test_refused(self):
        want = os.environ["SD_PYWALK_EXPECT_UNSUPPORTED"]
        msg = ctypes.create_string_buffer(256)
        self.assertEqual(lib.sd_test_init(msg, 256), 0)
        version, unavailable, present = msg.value.decode().split("|")
        self.assertEqual(unavailable, "Python frames unavailable: CPython " + want)
        self.assertEqual(present, "1")
        self.assertTrue(version.startswith(want + "."))
        self.assertEqual(lib.sd_test_walk(_buf, BUFSIZE, 16, 1), -2)


if __name__ == "__main__":
    if os.environ.get("SD_PYWALK_EXPECT_UNSUPPORTED"):
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(TestUnsupported)
        ok = unittest.TextTestRunner(verbosity=1).run(suite).wasSuccessful()
        sys.exit(0 if ok else 1)
    del TestUnsupported
    unittest.main()

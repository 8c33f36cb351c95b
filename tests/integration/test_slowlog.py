"""Unit tests for tests/slowlog.py, against a fake writer of the documented format.

Run: python3 tests/integration/test_slowlog.py
"""

import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import slowlog  # noqa: E402


def fake_report(rid="12345-17", request="GET /slow?delay=3", host="localhost:8000",
                py=True, native=True, capture="blocked in clock_nanosleep()",
                running="2.023 s (threshold 2.000 s)", end_id=None):
    pid = rid.split("-")[0]
    out = ["--- slowdog: slow request ---",
           "Time:       2026-11-22 02:59:01.123 UTC",
           "Request:    %s" % request]
    if host is not None:
        out.append("Host:       %s" % host)
    out += ["Request-Id: %s" % rid,
            "Process:    %s /usr/bin/python3 /usr/bin/gunicorn app:app" % pid,
            "Parent:     12340",
            "Thread:     12346 (python3)",
            "Started:    2026-11-22 02:58:59.100 UTC",
            "Running:    %s" % running,
            "Capture:    %s" % capture,
            ""]
    if py is True:
        out += ["Traceback (most recent call last):",
                '  File "/srv/app.py", line 20, in view',
                "    slow_sleep(delay)",
                '  File "/srv/app.py", line 13, in slow_sleep',
                "    time.sleep(delay)",
                "  In native code (most recent call first):",
                "    #0   0x00007f0a1b2c3d4e clock_nanosleep+0x57 (/usr/lib/x86_64-linux-gnu/libc.so.6)",
                "    #1   0x000055d0c0ffee00 ?? (??)",
                ""]
    elif py:
        out += [py, ""]
    if native:
        out += ["Native stack (most recent call first):",
                "  #0  0x00007f0a1b2c3d4e clock_nanosleep+0x57 (/usr/lib/x86_64-linux-gnu/libc.so.6)",
                "  #1  0x000055d0c0ffee00 ?? (/usr/bin/python3.11)",
                "  #2  0x000055d0c0ffee10 _PyEval_EvalFrameDefault+0x1a2b (/usr/bin/python3.11)"]
    else:
        out += ["Native stack unavailable: unwinding failed"]
    out.append("--- end of slowdog report %s ---" % (end_id or rid))
    return "\n".join(out) + "\n"


def fake_finished(rid="12345-17", secs="5.031", request="GET /slow?delay=3"):
    return "slowdog: request %s finished after %s s: %s\n" % (rid, secs, request)


class ParseTest(unittest.TestCase):
    def test_good_log(self):
        text = fake_report() + fake_report("12345-18", "POST /x?a=\\x20") \
            + fake_finished() + "\n" + fake_finished("12345-18", "1.000", "POST /x?a=\\x20")
        reps, fins, errs = slowlog.parse(text)
        self.assertEqual(errs, [])
        self.assertEqual(len(reps), 2)
        self.assertEqual(len(fins), 2)
        r = reps[0]
        self.assertEqual(r.request, "GET /slow?delay=3")
        self.assertEqual(r.request_id, "12345-17")
        self.assertEqual(r.pid, 12345)
        self.assertEqual(r.ppid, 12340)
        self.assertEqual(r.tid, 12346)
        self.assertEqual(r.thread_name, "python3")
        self.assertAlmostEqual(r.running, 2.023)
        self.assertAlmostEqual(r.threshold, 2.0)
        self.assertEqual(r.blocked_in, "clock_nanosleep")
        self.assertEqual([f.func for f in r.py_frames], ["view", "slow_sleep"])
        self.assertEqual(r.py_frames[1].source, "time.sleep(delay)")
        self.assertEqual(len(r.py_native), 2)
        self.assertEqual(r.py_native[0].base_name, "clock_nanosleep")
        self.assertIsNone(r.py_native[1].obj)
        self.assertEqual(r.native[0].name, "clock_nanosleep+0x57".split("+")[0])
        self.assertEqual(r.native[0].offset, 0x57)
        self.assertEqual(r.native[0].obj, "/usr/lib/x86_64-linux-gnu/libc.so.6")
        self.assertIsNone(r.native[1].name)
        self.assertEqual(r.native[2].name, "_PyEval_EvalFrameDefault")
        self.assertEqual(fins[1].request, "POST /x?a=\\x20")
        self.assertAlmostEqual(fins[0].seconds, 5.031)

    def test_variants(self):
        for text in (fake_report(host=None), fake_report(py=False),
                     fake_report(py="Python frames unavailable: CPython 3.14"),
                     fake_report(py="No Python frames on this thread."),
                     fake_report(native=False), fake_report(capture="signal"),
                     fake_report(request="(request not parsed)"),
                     fake_report(capture="signal (thread stopped for 14.6 us)"),
                     fake_report(capture="asleep in futex() (system call 202)"),
                     fake_report(capture="failed: thread exited")):
            reps, fins, errs = slowlog.parse(text)
            self.assertEqual(errs, [], text)
            self.assertEqual(len(reps), 1)

    def test_base_name(self):
        f = slowlog.NativeFrame(0, 0, "__GI___clock_nanosleep", 0, None)
        self.assertEqual(f.base_name, "clock_nanosleep")
        f = slowlog.NativeFrame(0, 0, "__libc_recv", 0, None)
        self.assertEqual(f.base_name, "recv")
        f = slowlog.NativeFrame(0, 0, "__wait4", 0, None)
        self.assertEqual(f.base_name, "wait4")

    def expect_error(self, text, what):
        reps, fins, errs = slowlog.parse(text)
        self.assertTrue(errs, "no error for " + what)
        self.assertTrue(any(what in e for e in errs), (what, errs))

    def test_bad(self):
        self.expect_error("hello\n", "not part of a record")
        self.expect_error(fake_report()[:-1], "newline")
        self.expect_error(fake_report(end_id="1-2"), "end marker id")
        self.expect_error(fake_report().replace("Parent:     12340\n", ""), "missing field Parent")
        self.expect_error(fake_report().replace("Parent:     ", "Parent:  "), "column 12")
        self.expect_error(fake_report(running="2 s"), "bad Running")
        self.expect_error(fake_report(request="GET  /x"), "bad Request")
        self.expect_error(fake_report(capture="maybe"), "bad Capture")
        self.expect_error(fake_report().replace("12345-17", "999-17"), "does not start with the pid")
        self.expect_error(fake_report().replace("  #1 ", "  #7 "), "numbered")
        self.expect_error(fake_report().replace("Native stack (most", "Native stuck (most"),
                          "")
        half = fake_report().split("\n")
        self.expect_error("\n".join(half[:14]) + "\n", "not terminated")
        self.expect_error(fake_report().replace("--- end", "--- slowdog: slow request ---\n--- end"),
                          "")
        self.expect_error(fake_finished(secs="5"), "not part of a record")
        reps, fins, errs = slowlog.parse("slowdog: request 1-2 finished after 1.000 s\n")
        self.assertEqual((errs, fins[0].request), ([], None))
        # field order
        t = fake_report().split("\n")
        t[2], t[3] = t[3], t[2]
        self.expect_error("\n".join(t), "out of order")

    def test_tail(self):
        fd, path = tempfile.mkstemp()
        try:
            now = [0.0]
            tail = slowlog.Tail(path, lambda: now[0])
            tail.poll()
            text = fake_report() + fake_finished()
            cut = len(text) // 2
            os.write(fd, text[:cut].encode())
            now[0] = 1.0
            tail.poll()
            self.assertEqual(tail.reports, {})
            os.write(fd, text[cut:].encode())
            now[0] = 2.0
            tail.poll()
            self.assertEqual(tail.reports, {"GET /slow?delay=3": [2.0]})
            self.assertEqual(tail.finished, {"12345-17": 2.0})
            self.assertEqual(tail.report_ids["GET /slow?delay=3"], "12345-17")
        finally:
            os.close(fd)
            os.unlink(path)


if __name__ == "__main__":
    unittest.main()

"""Stress: thousands of captures of threads churning the interpreter.

Run with libslowdog.so preloaded and SLOWDOG_THRESHOLD=1ms; each worker
thread brackets short bursts of work with slowdog_begin()/slowdog_end(),
so nearly every burst is captured while the thread recurses, iterates
generators, raises and catches exceptions, allocates, and starts and joins
threads. Afterwards the log is checked: every report well formed, every
Python frame either one of ours or the standard library's, or the report
says the chain was damaged.

usage: pystress.py LOG SECONDS
"""
import ctypes
import os
import random
import re
import sys
import threading
import time

LOG, SECONDS = sys.argv[1], float(sys.argv[2])
lib = ctypes.CDLL(None)
begin, end = lib.slowdog_begin, lib.slowdog_end
begin.argtypes = [ctypes.c_char_p]

OURS = {"recurse", "gen", "churn_gen", "churn_exc", "churn_alloc",
        "churn_threads", "tiny", "burst", "worker", "<lambda>", "<listcomp>",
        "<genexpr>", "<dictcomp>", "raiser", "main", "<module>"}


def recurse(n, f):
    if n == 0:
        return f()
    return recurse(n - 1, f) + 1


def gen(n):
    for i in range(n):
        yield i * 2


def churn_gen():
    return sum(x for x in gen(200))


def raiser(n):
    if n:
        raise ValueError(n)


def churn_exc():
    c = 0
    for i in range(200):
        try:
            raiser(i)
        except ValueError:
            c += 1
    return c


def churn_alloc():
    d = {i: [i] * 8 for i in range(300)}
    return len([(lambda v: v)(x) for x in d.values()])


def tiny():
    return sum(range(100))


def churn_threads():
    ts = [threading.Thread(target=tiny) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return 0


WORK = [churn_gen, churn_exc, churn_alloc, churn_threads]


def burst(rng):
    deadline = time.perf_counter() + rng.uniform(0.002, 0.006)
    while time.perf_counter() < deadline:
        f = rng.choice(WORK)
        recurse(rng.randint(0, 150), f)
    if rng.random() < 0.1:
        time.sleep(0.003)  # blocked path too


def worker(seed, stop, counts):
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        begin(b"stress burst")
        burst(rng)
        end()
        n += 1
    counts.append(n)


def main():
    stop = threading.Event()
    counts = []
    ts = [threading.Thread(target=worker, args=(i, stop, counts))
          for i in range(3)]
    for t in ts:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in ts:
        t.join()
    time.sleep(0.3)
    return sum(counts)


bursts = main()

text = open(LOG, encoding="utf-8", errors="replace").read()
blocks = re.findall(r"--- slowdog: slow request ---\n(.*?)--- end of slowdog "
                    r"report [0-9-]+ ---\n", text, re.S)
starts = text.count("--- slowdog: slow request ---")
frame_re = re.compile(r'^  File "(.*)", line (\d+|\?), in (.*)$', re.M)
bad = []
damaged = captured = 0
for b in blocks:
    if "Capture:    failed" in b:
        continue
    captured += 1
    if "damaged" in b:
        damaged += 1
    # A burst is always run from worker(): a capture that shows no
    # Python frame at all is wrong (frames entered a moment ago may
    # rightly be missing: CPython's own tracebacks skip them too).
    if "Traceback (most recent call last):" not in b:
        bad.append(("no Python frames", "", b[:600]))
    for path, line, func in frame_re.findall(b):
        if path == os.path.abspath(__file__) or path.endswith("pystress.py"):
            if func not in OURS:
                bad.append((path, line, func))
        elif "/lib/python3" not in path and "/lib/python3." not in path:
            bad.append((path, line, func))
print("bursts %d reports %d captured %d damaged %d bad %d"
      % (bursts, len(blocks), captured, damaged, len(bad)))
if bad:
    print("unexpected frames:", bad[:10])
ok = starts == len(blocks) and not bad and captured >= min(200, bursts // 4)
sys.exit(0 if ok else 1)

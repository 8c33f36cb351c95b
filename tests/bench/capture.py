"""Capture pause, Python side: CPU-bound work at a given Python stack depth,
bracketed with slowdog_begin()/slowdog_end() so that slowdog's watchdog
captures it with its signal (the thread is running, not blocked).

  python3 capture.py DEPTH COUNT BURST_MS

Run with libslowdog.so preloaded, SLOWDOG_THRESHOLD well under BURST_MS and
SLOWDOG_FORMAT=json; each burst gives one report whose capture.pause_us is
how long the handler stopped the thread. scripts/bench reads the log.
"""

import ctypes
import sys
import time


def spin(ms):
    end = time.perf_counter() + ms / 1000.0
    x = 0
    while time.perf_counter() < end:
        for i in range(100):
            x += i
    return x


def recurse(n, ms):
    # n more Python frames under this one, then the work
    if n <= 1:
        return spin(ms)
    return recurse(n - 1, ms) + 1


def main():
    depth, count, burst = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    sys.setrecursionlimit(max(1000, depth + 100))
    lib = ctypes.CDLL(None)
    try:
        begin, end = lib.slowdog_begin, lib.slowdog_end
    except AttributeError:
        sys.exit("capture.py: slowdog is not preloaded")
    begin.argtypes = [ctypes.c_char_p]
    begin.restype = end.restype = ctypes.c_int
    # <module>, main() and spin() are three frames: recurse() makes the rest.
    label = b"bench python depth %d" % depth
    for _ in range(count):
        if begin(label) != 0:
            sys.exit("capture.py: slowdog_begin failed")
        recurse(depth - 3, burst)
        end()
        # let the watchdog finish writing the report before the next burst
        time.sleep(0.002)


if __name__ == "__main__":
    main()

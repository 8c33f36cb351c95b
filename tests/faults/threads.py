"""N threads at once, each bracketing S seconds of sleep with
slowdog_begin("thread NNNN") and slowdog_end(), for tests/faults/run.py.

  python3 threads.py N S

Prints, as its last line, a JSON object mapping each label to the
thread's kernel id; exit status 1 when a call returned an error.
"""
import ctypes
import json
import sys
import threading
import time


def main():
    n, secs = int(sys.argv[1]), float(sys.argv[2])
    sd = ctypes.CDLL(None)
    sd.slowdog_begin.argtypes = [ctypes.c_char_p]
    sd.slowdog_begin.restype = ctypes.c_int
    sd.slowdog_end.restype = ctypes.c_int
    tids, bad = {}, []
    start = threading.Barrier(n + 1)

    def work(i):
        label = "thread %04d" % i
        tids[label] = threading.get_native_id()
        start.wait()  # all begin together
        if sd.slowdog_begin(label.encode()) != 0:
            bad.append(label)
        time.sleep(secs)
        if sd.slowdog_end() != 0:
            bad.append(label)

    threading.stack_size(256 * 1024)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    start.wait()
    for t in ts:
        t.join()
    if bad:
        print("slowdog_begin or _end failed for", bad[:5])
    print(json.dumps(tids))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

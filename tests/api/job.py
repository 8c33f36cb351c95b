"""A Python batch job that brackets its work with slowdog_begin/slowdog_end
through ctypes, as slowdog_begin(3) shows: the functions are looked up in
the process (ctypes.CDLL(None)), so the job also runs without the preload.

  python3 job.py [--expect-disabled] [SECONDS]     (default 1.0 s of work)

Prints one line per check; exit status 1 when a return value is wrong.
tests/api/run.sh checks the report it leads to.
"""

import ctypes
import sys
import threading
import time

failures = 0


def check(what, ok):
    global failures
    print("%s  %s" % ("ok  " if ok else "FAIL", what), flush=True)
    if not ok:
        failures += 1


def load_slowdog():
    """The preloaded library's functions, or None when it is not loaded."""
    proc = ctypes.CDLL(None)
    try:
        begin = proc.slowdog_begin
        end = proc.slowdog_end
        version = proc.slowdog_version
    except AttributeError:
        return None
    begin.argtypes = [ctypes.c_char_p]
    begin.restype = ctypes.c_int
    end.argtypes = []
    end.restype = ctypes.c_int
    version.argtypes = []
    version.restype = ctypes.c_char_p
    return begin, end, version


def run_job(seconds):
    # The report's traceback must show this function.
    time.sleep(seconds)


def main(argv):
    expect_disabled = "--expect-disabled" in argv
    args = [a for a in argv if not a.startswith("--")]
    seconds = float(args[0]) if args else 1.0

    sd = load_slowdog()
    if sd is None:
        print("slowdog not loaded: doing the work unwatched", flush=True)
        run_job(seconds)
        return 0
    begin, end, version = sd

    check("slowdog_version() is 0.1.0", version() == b"0.1.0")
    check("slowdog_end() with nothing begun returns -1", end() == -1)

    if expect_disabled:
        check("slowdog_begin() returns -1 when disabled",
              begin(b"nightly import") == -1)
        run_job(seconds)
        check("slowdog_end() returns -1 when disabled", end() == -1)
        return 1 if failures else 0

    check('slowdog_begin(b"nightly import") returns 0',
          begin(b"nightly import") == 0)
    other = []
    t = threading.Thread(target=lambda: other.append(end()))
    t.start()
    t.join()
    check("slowdog_end() on another thread returns -1", other == [-1])
    run_job(seconds)
    check("slowdog_end() returns 0", end() == 0)
    check("a second slowdog_end() returns -1", end() == -1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

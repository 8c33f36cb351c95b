#!/usr/bin/python3
"""Where the instructions slowdog adds to a request go: compares the
callgrind dumps of a worker run without slowdog with those of the same
worker run with it, per request, function by function (each function's
own instructions, not what it calls), and sums the differences into:

  own       slowdog's own functions (libslowdog.so), by function; the
            assembler entry stubs (named as the libc calls they stand
            for) are summed apart, as "stubs"
  libc-mt   glibc's paths that a second thread turns on: malloc and free
            (arena locks), mutexes (pthread_mutex_lock/unlock skip their
            atomics in a single-threaded process), stdio's locks, and the
            cancellation points (__pthread_enable_asynccancel /
            __pthread_disable_asynccancel, and the system call wrappers'
            own cancellable path: read, send, accept4, close, ...)
  libc      the rest of libc: what slowdog calls (clock_gettime, errno,
            memcpy, ...)
  rest      everything else (the interpreter, the server's own code):
            where the interpreter's work moves with memory layout

  cgsplit.py WITHOUT_DIR WITH_DIR [--requests N]

Each directory holds the dumps of one worker (cg.PID.N, from
scripts/bench --instructions --keep); the second half of the dumps between
the first and the last are compared, as scripts/bench counts them.
"""

import collections
import os
import re
import sys

MT = re.compile(r"^(malloc|free|cfree|calloc|realloc|_int_malloc|_int_free|"
                r"tcache_\w+|arena_get2|_int_realloc|malloc_consolidate|"
                r"__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|"
                r"_IO_\w*lock\w*|__lll_lock_\w+|__lll_unlock\w*|"
                r"__pthread_enable_asynccancel|__pthread_disable_asynccancel|"
                r"__syscall_cancel\w*|__internal_syscall_cancel|"
                r"_IO_flockfile|_IO_funlockfile|__GI___pthread_\w*cancel\w*|"
                r"_IO_acquire_lock_fct|ftrylockfile|flockfile|funlockfile|"
                r"pthread_mutex_lock|__pthread_mutex_lock|pthread_mutex_unlock|"
                r"__pthread_mutex_unlock_usercnt|__pthread_mutex_unlock)$")


def dumps(d):
    """The worker's dumps in d, by pid: the pid with the most."""
    by = collections.defaultdict(list)
    for f in os.listdir(d):
        p = f.split(".")
        if len(p) == 3 and p[0] == "cg" and p[2].isdigit():
            by[p[1]].append((int(p[2]), os.path.join(d, f)))
    if not by:
        raise SystemExit("no dumps in %s" % d)
    pid = max(by, key=lambda k: len(by[k]))
    return [x for _, x in sorted(by[pid])]


def self_costs(path):
    """{(object, function): own instructions} of one dump."""
    names = {"ob": {}, "fn": {}}
    cur = {"ob": "", "fn": ""}
    out = collections.Counter()
    skip = False
    with open(path, errors="replace") as f:
        for line in f:
            if skip:
                skip = False
                continue
            key, eq, val = line.rstrip("\n").partition("=")
            if eq and key in ("ob", "cob", "fn", "cfn", "cfi", "cfl", "fl", "fi", "fe"):
                m = re.match(r"\((\d+)\)(?: (.*))?$", val)
                kind = {"cob": "ob", "cfn": "fn"}.get(key, key)
                name = val
                if m and kind in names:
                    if m.group(2):
                        names[kind][m.group(1)] = m.group(2)
                    name = names[kind].get(m.group(1), "?")
                if key in ("ob", "fn"):
                    cur[key] = name
                continue
            if line.startswith("calls="):
                skip = True
                continue
            if line[:1] in "0123456789+-*":
                p = line.split()
                if len(p) >= 2 and p[1].isdigit():
                    out[os.path.basename(cur["ob"]), cur["fn"]] += int(p[1])
    return out


def per_request(d, requests):
    mid = dumps(d)[1:-1]
    k = len(mid) / float(requests) if requests else 0
    if requests and abs(k - round(k)) < 0.25 and round(k) >= 1:
        half = requests // 2
        use, n = mid[-half * int(round(k)):], half
    else:
        use, n = mid, requests or len(mid)
    tot = collections.Counter()
    for x in use:
        tot.update(self_costs(x))
    return {key: v / float(n) for key, v in tot.items()}


def category(ob, fn):
    if "libslowdog" in ob:
        return "own"
    if ob.startswith("libc.so") or ob.startswith("libc-"):
        base = fn.split("@")[0]
        return "libc-mt" if MT.match(base) or base in STUB_NAMES else "libc"
    return "rest"


def main():
    args = sys.argv[1:]
    requests = 303
    if "--requests" in args:
        i = args.index("--requests")
        requests = int(args[i + 1])
        del args[i:i + 2]
    a = per_request(args[0], requests)
    b = per_request(args[1], requests)
    cats = collections.Counter()
    own = collections.Counter()
    libc = collections.Counter()
    rest = collections.Counter()
    for key in set(a) | set(b):
        dv = b.get(key, 0) - a.get(key, 0)
        c = category(*key)
        cats[c] += dv
        if c == "own":
            own[key[1]] += dv
        elif c.startswith("libc"):
            libc[key[1]] += dv
        else:
            rest["%s %s" % key] += dv
    ta, tb = sum(a.values()), sum(b.values())
    print("per request: without %.0f, with %.0f, added %+.0f (%+.2f %%)" %
          (ta, tb, tb - ta, 100 * (tb / ta - 1)))
    for c in ("own", "libc-mt", "libc", "rest"):
        print("  %-8s %+8.0f" % (c, cats[c]))
    stubs = sum(v for k, v in own.items() if k in STUB_NAMES and k not in PLAIN)
    plain = sum(v for k, v in own.items() if k in PLAIN)
    wd = sum(v for k, v in own.items() if k.split(".")[0] in WATCHDOG)
    print("own, by function (entry stubs: %.0f; plain wrappers: %.0f; "
          "the watchdog thread's: %.0f):" % (stubs, plain, wd))
    for k, v in sorted(own.items(), key=lambda kv: -abs(kv[1])):
        if abs(v) >= 0.5:
            print("  %8.1f  %s%s" % (v, k, "  (plain wrapper)" if k in PLAIN else
                                     "  (entry stub)" if k in STUB_NAMES else
                                     "  (watchdog)" if k.split(".")[0] in WATCHDOG else ""))
    print("libc, changed functions:")
    for k, v in sorted(libc.items(), key=lambda kv: -abs(kv[1]))[:25]:
        if abs(v) >= 0.5:
            mt = category("libc.so.6", k) == "libc-mt"
            print("  %+8.1f  %s%s" % (v, k, "  (mt)" if mt else ""))
    print("rest, largest changes:")
    for k, v in sorted(rest.items(), key=lambda kv: -abs(kv[1]))[:15]:
        if abs(v) >= 0.5:
            print("  %+8.1f  %s" % (v, k))


STUB_NAMES = set("""read recv recvfrom readv recvmsg write send sendto writev sendmsg
sendfile sendfile64 accept accept4 poll ppoll select pselect epoll_wait
epoll_pwait epoll_pwait2 epoll_ctl close close_range dup dup2 dup3 fcntl fcntl64
shutdown nanosleep clock_nanosleep usleep sleep connect waitpid wait4 wait
waitid sem_wait sem_timedwait sem_clockwait pthread_cond_wait
pthread_cond_timedwait pthread_cond_clockwait pthread_mutex_lock pause
sigsuspend sigwait sigwaitinfo sigtimedwait flock lockf fsync fdatasync
msgrcv msgsnd futex""".split())
# functions of slowdog's watchdog thread (the rest run in the worker's)
WATCHDOG = set("""watchdog_main drain_done drain_stalls loop_scan loop_pass loopreq_alive
report_thread live_request release_memory reported_take thread_stopped
find_module glet_setup conn_fd_limit conn_slot thread_bell_wait
report_awaiting report_stall""".split())
# slowdog's wrappers in C, without an entry stub (nothing blocks in them)
PLAIN = set("""close shutdown close_range dup dup2 dup3 fcntl fcntl64 epoll_ctl kill
sigaction signal pthread_sigmask sigprocmask""".split())

if __name__ == "__main__":
    main()

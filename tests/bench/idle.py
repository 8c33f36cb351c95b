"""Holds many idle keep-alive connections open to HTTP servers.

  python3 idle.py COUNT PORT

Opens COUNT connections to the port, sends one keep-alive request on each
and reads its response, so that the server keeps the connection (gunicorn's
gthread worker parks it in its poller), then prints "ready N" (N: the
connections held in all) and holds them until standard input closes or
says anything. Needs RLIMIT_NOFILE above COUNT (raised as far as the hard
limit allows).
"""

import resource
import selectors
import socket
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    for lim in ((want, max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            return
        except (ValueError, OSError):
            pass


def response_length(got):
    """The length of the response whose head got starts with, head
    included (Content-Length framed), or None while the head is not all
    in got."""
    head, sep, _ = got.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return len(head) + len(sep) + length


def open_all(count, port, batch=200):
    """count connections to port, each having had one request answered."""
    held = []
    sel = selectors.DefaultSelector()
    while len(held) < count:
        pending = {}
        for _ in range(min(batch, count - len(held))):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(REQUEST)
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        while pending:
            events = sel.select(timeout=30)
            if not events:
                raise SystemExit("idle.py: no response from port %d" % port)
            for key, _ in events:
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    raise SystemExit("idle.py: port %d closed a connection" % port)
                got = pending[s] + data
                whole = response_length(got)
                if whole is not None and len(got) >= whole:
                    sel.unregister(s)
                    del pending[s]
                    held.append(s)
                    continue
                pending[s] = got
    sel.close()
    return held


def main():
    count, port = int(sys.argv[1]), int(sys.argv[2])
    raise_nofile(count + 64)
    held = open_all(count, port)
    print("ready %d" % len(held), flush=True)
    sys.stdin.read(1)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()

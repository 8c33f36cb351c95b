"""Serves a known number of requests over a known number of connections.

  python3 lockstep.py PORT CONNS ROUNDS

Opens CONNS keep-alive connections to the port and has one request
answered on each, then asks for /mark (the application calls getsid()
there, where callgrind dumps its counters), then sends ROUNDS rounds of
one request on every connection at once, each round answered in full
before the next, then asks for /mark again, closes everything and prints
"served N" (N: the requests between the two marks, the second mark's
included). So the counters between the two dumps belong to exactly N
requests made over CONNS concurrent connections.
"""

import selectors
import socket
import sys

from idle import raise_nofile, response_length

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"
MARK = b"GET /mark HTTP/1.1\r\nHost: bench\r\nConnection: keep-alive\r\n\r\n"


def whole(got):
    """Whether got holds one whole response (Content-Length framed)."""
    n = response_length(got)
    if n is not None and len(got) > n:
        raise SystemExit("lockstep.py: more bytes than one response")
    return len(got) == n


def exchange(socks, request, sel):
    """request on every socket at once; returns when all are answered."""
    pending = {}
    for s in socks:
        s.sendall(request)
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
    while pending:
        events = sel.select(timeout=300)
        if not events:
            raise SystemExit("lockstep.py: no response in 300 s")
        for key, _ in events:
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                raise SystemExit("lockstep.py: the server closed a connection")
            pending[s] += data
            if whole(pending[s]):
                sel.unregister(s)
                del pending[s]


def main():
    port, conns, rounds = (int(a) for a in sys.argv[1:4])
    raise_nofile(conns + 64)
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(0, conns, 200):
        batch = [socket.create_connection(("127.0.0.1", port), timeout=300)
                 for _ in range(min(200, conns - i))]
        exchange(batch, REQUEST, sel)
        socks += batch
    exchange(socks[:1], MARK, sel)
    for _ in range(rounds):
        exchange(socks, REQUEST, sel)
    exchange(socks[:1], MARK, sel)
    for s in socks:
        s.close()
    print("served %d" % (conns * rounds + 1), flush=True)


if __name__ == "__main__":
    main()

"""A server that parses nothing, for tests/faults/security.py: whatever
bytes a client sends, the library's own parser is what names the request.

  python3 rawserver.py PORT slow SECONDS   a thread per connection: read
        until a blank line (CRLF CRLF or LF LF), the end of input or 2 MiB,
        wait SECONDS, answer, close
  python3 rawserver.py PORT mem            one thread, many connections at
        once (selectors): read everything into one fixed buffer until a
        blank line or the end of input, answer, close; so that its own
        memory does not depend on what clients send

Stops on SIGTERM.
"""
import selectors
import signal
import socket
import sys
import threading
import time

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
LIMIT = 2 << 20


def ends_head(tail):
    return b"\r\n\r\n" in tail or b"\n\n" in tail


def serve_slow(conn, secs):
    try:
        got, tail = 0, b""
        while got < LIMIT:
            d = conn.recv(65536)
            if not d:
                break
            got += len(d)
            tail = (tail + d)[-8:]
            if ends_head(tail) or ends_head(d):
                break
        time.sleep(secs)
        conn.sendall(ANSWER)
    except OSError:
        pass
    finally:
        conn.close()


def run_slow(ls, secs):
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve_slow, args=(c, secs), daemon=True).start()


def run_mem(ls):
    buf = bytearray(65536)
    view = memoryview(buf)
    sel = selectors.DefaultSelector()
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    tails = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                tails[c.fileno()] = b""
                sel.register(c, selectors.EVENT_READ, c)
                continue
            c = key.data
            try:
                n = c.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            fd = c.fileno()
            t = tails[fd] + bytes(view[max(0, n - 8):n])
            tails[fd] = t[-8:]
            if n and not ends_head(t):
                continue
            sel.unregister(c)
            del tails[fd]
            try:
                c.setblocking(True)
                c.sendall(ANSWER)
            except OSError:
                pass
            c.close()


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(512)
    if mode == "slow":
        run_slow(ls, float(sys.argv[3]))
    else:
        run_mem(ls)


if __name__ == "__main__":
    main()

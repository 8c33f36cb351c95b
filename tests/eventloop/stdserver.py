"""A small HTTP/1.1 server of the standard library's asyncio (no uvicorn:
it runs on every CPython of the suite) that serves asgiapp.app, on an
event loop of the selector named on the command line.

    stdserver.py PORT poll|select|epoll
"""
import asyncio
import os
import selectors
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asgiapp  # noqa: E402

SELECTORS = {"poll": "PollSelector", "select": "SelectSelector",
             "epoll": "EpollSelector"}


async def serve_request(reader, writer, head):
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    path, _, query = target.partition("?")
    # named scope, as ASGI servers name it: slowdog finds the request's
    # task by this local
    scope = {"type": "http", "asgi": {"version": "3.0"},
             "method": method, "path": path,
             "query_string": query.encode(),
             "client": writer.get_extra_info("peername")[:2],
             "headers": []}
    out = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        if msg["type"] == "http.response.start":
            out.append(("HTTP/1.1 %d OK\r\n" % msg["status"]).encode())
            for k, v in msg["headers"]:
                out.append(k + b": " + v + b"\r\n")
            out.append(b"\r\n")
        elif msg["type"] == "http.response.body":
            out.append(msg.get("body", b""))
            writer.write(b"".join(out))
            del out[:]
            await writer.drain()

    await asgiapp.app(scope, receive, send)


async def connection(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            await serve_request(reader, writer, head)
    finally:
        writer.close()


def main():
    port = int(sys.argv[1])
    sel = getattr(selectors, SELECTORS[sys.argv[2]])()
    loop = asyncio.SelectorEventLoop(sel)
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        asyncio.start_server(connection, "127.0.0.1", port))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()

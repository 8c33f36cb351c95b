"""A threaded HTTP/1.1 WSGI server from the standard library only.

http.server.ThreadingHTTPServer (one thread per connection, keep-alive:
the thread blocks in recv() between requests) running a WSGI app, with
Content-Length responses when the app gives one and chunked ones when it
does not. wsgiref cannot be used as is: its handler serves one request per
connection.

Usage: python3 stdserver.py PORT [module:callable]   (default app:app)
"""

import importlib
import io
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sd-stdserver"
    sys_version = ""
    app = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.run_wsgi()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def environ(self):
        path, _, query = self.path.partition("?")
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length else b""
        env = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_URI": self.path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_LENGTH": length or "",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in self.headers.items():
            key = "HTTP_" + k.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"):
                env[key] = v
        return env

    def run_wsgi(self):
        state = {}

        def start_response(status, headers, exc_info=None):
            state["status"] = status
            state["headers"] = headers
            return self.wfile.write

        result = self.app(self.environ(), start_response)
        try:
            head = ["%s %s\r\n" % (self.protocol_version, state["status"]),
                    "Server: %s\r\n" % self.server_version]
            names = {k.lower() for k, _ in state["headers"]}
            head += ["%s: %s\r\n" % kv for kv in state["headers"]]
            chunked = "content-length" not in names
            if chunked:
                head.append("Transfer-Encoding: chunked\r\n")
            if self.close_connection:
                head.append("Connection: close\r\n")
            head.append("\r\n")
            # wfile is unbuffered: one send for the head, one per item.
            self.wfile.write("".join(head).encode("latin-1"))
            if self.command == "HEAD":
                return
            for data in result:
                if not data:
                    continue
                if chunked:
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                self.wfile.write(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            close = getattr(result, "close", None)
            if close:
                close()


def main():
    port = int(sys.argv[1])
    spec = sys.argv[2] if len(sys.argv) > 2 else "app:app"
    mod, _, name = spec.partition(":")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    Handler.app = staticmethod(getattr(importlib.import_module(mod), name or "app"))
    server = Server(("127.0.0.1", port), Handler)
    # SIGINT may be ignored when started in the background: stop on TERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

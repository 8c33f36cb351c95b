"""A tiny threaded WSGI server from the standard library, for
tests/pyframes/run.py: one thread per connection, one request per
connection, chunked responses when the app gives no Content-Length.

Usage: python3 wsgiserver.py PORT module:callable
PORT 0 picks a free port; the server prints "listening PORT" when ready.
SIGINT stops it (exit status 0).
"""

import importlib
import io
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    request_queue_size = 64


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app = None

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.close_connection = True
        path, _, query = self.path.partition("?")
        environ = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in self.headers.items():
            environ["HTTP_" + k.upper().replace("-", "_")] = v
        state = {}

        def start_response(status, headers, exc_info=None):
            state["status"], state["headers"] = status, headers

        result = self.app(environ, start_response)
        try:
            headers = state["headers"]
            chunked = all(k.lower() != "content-length" for k, _ in headers)
            head = "HTTP/1.1 %s\r\n" % state["status"]
            head += "".join("%s: %s\r\n" % kv for kv in headers)
            if chunked:
                head += "Transfer-Encoding: chunked\r\n"
            head += "Connection: close\r\n\r\n"
            # wfile is unbuffered: one send for the head, one per item.
            self.wfile.write(head.encode("latin-1"))
            for data in result:
                if chunked:
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                self.wfile.write(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            if hasattr(result, "close"):
                result.close()


def main():
    # A shell without job control starts background commands with SIGINT
    # ignored: the stop signal must work anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mod, _, name = sys.argv[2].partition(":")
    Handler.app = staticmethod(getattr(importlib.import_module(mod), name))
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    server.server_close()


if __name__ == "__main__":
    main()

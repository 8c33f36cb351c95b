"""WSGI app for the event-loop suite (gevent, eventlet, uWSGI --gevent):
the server monkey-patches time.sleep, so /sleep awaits cooperatively."""
import sys
import time


def spin_cpu(sec):
    end = time.perf_counter() + sec
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def await_level2(sec):
    time.sleep(sec)


def await_level1(sec):
    await_level2(sec)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/spin":
        spin_cpu(2.0)
    elif path == "/sleep":
        await_level1(2.0)
    elif path == "/starve":
        time.sleep(0.4)
    elif path == "/pool":
        if "eventlet" in sys.modules:
            from eventlet import tpool
            tpool.execute(time.sleep, 0.3)
        else:
            import gevent
            gevent.get_hub().threadpool.apply(time.sleep, (0.3,))
    body = b"ok " + path.encode() + b"\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]

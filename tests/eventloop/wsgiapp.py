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


def block_sleep(sec):
    time.sleep(sec)  # monkey-patched: cooperative


def cpu_in_c(sec):
    # C code that holds the GIL (sum over a range), in calls of about
    # 50 ms until sec have passed
    end = time.perf_counter() + sec
    while time.perf_counter() < end:
        sum(range(5000000))


def wait_socket(port):
    import socket
    s = socket.create_connection(("127.0.0.1", port))
    try:
        return s.recv(1)  # the peer never answers; it closes after 2 s
    finally:
        s.close()


def after_stall(sec):
    time.sleep(sec)  # monkey-patched: cooperative


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = environ.get("QUERY_STRING", "")
    if path == "/spin":
        spin_cpu(2.0)
    elif path == "/block":
        block_sleep(2.0)
    elif path == "/cpu_c":
        cpu_in_c(2.0)
    elif path == "/socket":
        wait_socket(int(query))
    elif path == "/sleep":
        await_level1(2.0)
    elif path == "/starve":
        time.sleep(0.4)
    elif path == "/starve_slow":
        time.sleep(0.4)  # a stall starves it here, then it awaits
        after_stall(1.2)
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

"""WSGI application for the fleet tests: tests/integration/app.py, except
that any other path with ?s=X (any method) sleeps X seconds in
app.slow_sleep, so that statsd endpoint names can be checked for any path.

  /fast, /sleep?s=X     as in app.py
  /ANY/PATH?s=X         slow_sleep(X), then "slept METHOD PATH\\n"
"""

from urllib.parse import parse_qs

import app as base


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path in ("/fast", "/sleep"):
        return base.app(environ, start_response)
    q = parse_qs(environ.get("QUERY_STRING", ""))
    base.slow_sleep(float(q.get("s", ["0"])[0]))
    return base._reply(start_response, "slept %s %s\n"
                       % (environ.get("REQUEST_METHOD"), path))

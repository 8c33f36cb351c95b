"""The ASGI hello world scripts/bench serves on an event loop (gunicorn
with uvicorn's worker)."""

HELLO = b"Hello, World!\n"
HEAD = {"type": "http.response.start", "status": 200,
        "headers": [(b"content-type", b"text/plain"),
                    (b"content-length", str(len(HELLO)).encode())]}
BODY = {"type": "http.response.body", "body": HELLO}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(HEAD)
    await send(BODY)

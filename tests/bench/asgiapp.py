"""The ASGI hello world scripts/bench serves on an event loop: gunicorn
with uvicorn's worker (uvloop, or asyncio: AsyncioWorker below) and
uvicorn alone."""

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


try:  # gunicorn's UvicornWorker on asyncio's own loop (its default is uvloop)
    from uvicorn.workers import UvicornWorker

    class AsyncioWorker(UvicornWorker):
        CONFIG_KWARGS = {"loop": "asyncio", "http": "auto"}
except ImportError:
    pass

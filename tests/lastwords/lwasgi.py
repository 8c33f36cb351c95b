"""ASGI app for the last-words suite: a coroutine that blocks its loop."""
import time


def block_the_loop():
    time.sleep(20)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/block":
        block_the_loop()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})

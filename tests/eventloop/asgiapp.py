"""ASGI app for the event-loop suite (uvicorn, UvicornWorker)."""
import asyncio
import time


def spin_cpu(sec):
    end = time.perf_counter() + sec
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def await_level2(sec):
    await asyncio.sleep(sec)


async def await_level1(sec):
    await await_level2(sec)


def block_sleep(sec):
    time.sleep(sec)  # blocks the loop


def cpu_in_c(sec):
    # C code that holds the GIL (sum over a range), in calls of about
    # 50 ms until sec have passed
    end = time.perf_counter() + sec
    while time.perf_counter() < end:
        sum(range(5000000))


async def wait_socket(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await reader.read(1)  # never answers; closed after 2 s
    finally:
        writer.close()


async def after_stall(sec):
    await asyncio.sleep(sec)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": msg.get("text") or ""})
    path = scope["path"]
    query = scope.get("query_string", b"").decode()
    if path == "/spin":
        spin_cpu(2.0)
    elif path == "/block":
        block_sleep(2.0)
    elif path == "/cpu_c":
        cpu_in_c(2.0)
    elif path == "/subtask":
        await asyncio.ensure_future(await_level1(2.0))
    elif path == "/socket":
        await wait_socket(int(query))
    elif path == "/sleep":
        await await_level1(2.0)
    elif path == "/starve":
        await asyncio.sleep(0.4)
    elif path == "/starve_slow":
        await asyncio.sleep(0.4)  # a stall starves it here, then it awaits
        await after_stall(1.2)
    elif path == "/pool":
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.3)
    body = b"ok " + path.encode() + b"\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

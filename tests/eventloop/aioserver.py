"""A plain asyncio HTTP/1.1 server (asyncio.start_server, standard library
only, CPython 3.8+), for tests/eventloop/versions.py.

    python aioserver.py PORT

Paths: /fast answers at once; /sleep awaits asyncio.sleep through two
coroutines (sleep_level1 -> sleep_leaf); /socket?PORT awaits a peer that
never answers (silent_read); /gather awaits asyncio.gather of two tasks
(gathered_leaf); /waitfor awaits asyncio.wait_for of a coroutine
(waitfor_leaf); /shield awaits asyncio.shield of a coroutine
(shield_leaf); /taskgroup (3.11+) a TaskGroup's task (taskgroup_leaf); /spin holds the loop 2 s (spin_cpu).
Connections are kept alive.
"""
import asyncio
import sys
import time

SLOW = 2.5


async def sleep_leaf():
    await asyncio.sleep(SLOW)


async def sleep_level1():
    await sleep_leaf()


async def silent_read(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.read(1)
    writer.close()


async def gathered_leaf(n):
    await asyncio.sleep(SLOW + n * 0.1)


async def gather_both():
    await asyncio.gather(gathered_leaf(0), gathered_leaf(1))


async def waitfor_leaf():
    await asyncio.sleep(SLOW)


async def waitfor_outer():
    await asyncio.wait_for(waitfor_leaf(), 30)


async def shield_leaf():
    await asyncio.sleep(SLOW)


async def shield_outer():
    await asyncio.shield(shield_leaf())


async def taskgroup_leaf():
    await asyncio.sleep(SLOW)


async def taskgroup_outer():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(taskgroup_leaf())


def spin_cpu():
    end = time.time() + 2.0
    while time.time() < end:
        pass


async def route(target):
    path, _, query = target.partition("?")
    if path == "/spin":
        spin_cpu()
    elif path == "/sleep":
        await sleep_level1()
    elif path == "/socket":
        await silent_read(int(query))
    elif path == "/gather":
        await gather_both()
    elif path == "/waitfor":
        await waitfor_outer()
    elif path == "/shield":
        await shield_outer()
    elif path == "/taskgroup":
        await taskgroup_outer()
    return b"ok " + path.encode() + b"\n"


async def handle(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            body = await route(parts[1] if len(parts) > 1 else "/")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except Exception:
        pass
    writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

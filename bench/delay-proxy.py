"""A TCP proxy on loopback that delays every byte by a fixed time in each direction, so that a
relay on this machine answers as one at a distance would (a round trip of twice the delay). Bytes
keep their order and are not held back by one another: each chunk is sent when its own delay has
passed, so a large message streams as it would over a real link of that latency.

Usage: python3 bench/delay-proxy.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_MS
"""

import asyncio
import sys


async def pump(reader, writer, delay):
    queue = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
    except ConnectionError:
        queue.put_nowait((loop.time(), b""))
    await sender


async def main():
    listen, (host, port), delay = int(sys.argv[1]), sys.argv[2].rsplit(":", 1), float(sys.argv[3]) / 1000

    async def connection(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, up_writer, delay), pump(up_reader, client_writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


asyncio.run(main())

#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time each way, to stand for a network between
a client and a server on the same machine (the kernel's netem qdisc is not available everywhere).

    scripts/delay-proxy.py LISTEN_PORT UPSTREAM_PORT ONE_WAY_DELAY_MS

Data keeps its order; each chunk is forwarded DELAY after it arrived, so the round-trip time
grows by twice the delay while throughput is unchanged.
"""
import asyncio
import sys
import time


async def forward(reader, writer, delay):
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    finally:
        queue.put_nowait((0, None))
        await sender


async def main(listen, upstream, delay):
    async def connection(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(
            forward(client_reader, server_writer, delay),
            forward(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_port, upstream_port, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(main(listen_port, upstream_port, delay_ms / 1000))

"""WebSocket echo server (the `websockets` package) for tests/conformance_ws.rs.

Usage: ws_server.py PORT. Echoes text and binary messages; a text message
`close <code> <reason>` makes it close the connection with that code and reason.
Prints `listening` once bound.
"""
import asyncio
import logging
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        if isinstance(message, str) and message.startswith("close "):
            _, code, reason = message.split(" ", 2)
            await ws.close(int(code), reason)
            return
        await ws.send(message)


async def main(port):
    # No keepalive pings: an idle test must see a connection with no bytes at all.
    async with serve(echo, "127.0.0.1", port, ping_interval=None, max_size=2**24):
        print("listening", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    # A connection the proxy cuts on purpose (stream_idle) is not an error here.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    asyncio.run(main(int(sys.argv[1])))

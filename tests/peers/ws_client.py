"""WebSocket client (the `websockets` package) for tests/conformance_ws.rs.

Usage: ws_client.py URL IDLE_SECONDS. Runs each check against an echo server and
prints `ok <check>` or `FAIL <check>: <why>`; exits 1 if any check failed.
"""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

failures = 0


def report(name, ok, why=""):
    global failures
    if ok:
        print(f"ok {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL {name}: {why}", flush=True)


async def checks(url, idle):
    async with connect(url, ping_interval=None, max_size=2**24, open_timeout=10) as ws:
        await ws.send("hello")
        got = await asyncio.wait_for(ws.recv(), 10)
        report("text", got == "hello", repr(got))

        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        await ws.send(payload)
        got = await asyncio.wait_for(ws.recv(), 10)
        report("binary", got == payload, f"{type(got).__name__} of {len(got)} bytes")

        pong = await ws.ping(b"are-you-there")
        await asyncio.wait_for(pong, 10)
        report("ping", True)

        # No bytes either way for longer than the proxy's response-header timeout.
        await asyncio.sleep(idle)
        try:
            await ws.send("after idle")
            got = await asyncio.wait_for(ws.recv(), 10)
            report("idle", got == "after idle", repr(got))
        except ConnectionClosed as e:
            report("idle", False, f"closed after {idle}s idle: {e}")

        await ws.send("close 4001 server says bye")
        try:
            await asyncio.wait_for(ws.recv(), 10)
            report("server_close", False, "a message instead of the close")
        except ConnectionClosed:
            rcvd = ws.close_code, ws.close_reason
            report("server_close", rcvd == (4001, "server says bye"), repr(rcvd))

    async with connect(url, ping_interval=None, open_timeout=10) as ws:
        await ws.close(1001, "client going away")
        # The server echoes the client's close frame back (RFC 6455 5.5.1).
        rcvd = ws.close_code, ws.close_reason
        report("client_close", rcvd == (1001, "client going away"), repr(rcvd))


if __name__ == "__main__":
    asyncio.run(checks(sys.argv[1], float(sys.argv[2])))
    sys.exit(1 if failures else 0)

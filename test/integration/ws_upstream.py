"""A WebSocket upstream for test_websocket.py (python3-websockets), run as
its own process: `ws_upstream.py EVENTS_FILE`. Prints "listening on PORT"
once it accepts connections. Every handshake and every close is appended to
EVENTS_FILE as one JSON line, so tests can see what reached the upstream.

Paths:
  /echo        echoes every message
  /hello-close sends "hello", then closes the WebSocket (code 1000)
  /flood?mb=N  sends N MiB in 64 KiB binary messages, then waits for close
  /reject      answers the upgrade with a plain 403 (no 101)
  /headers     answers any plain HTTP request with its headers as JSON
"""
import asyncio
import http
import json
import sys
import urllib.parse

import websockets

EVENTS = sys.argv[1]


def event(**kw):
    with open(EVENTS, "a") as f:
        f.write(json.dumps(kw) + "\n")


async def process_request(path, headers):
    target = urllib.parse.urlparse(path).path
    hdrs = [[k, v] for k, v in headers.raw_items()]
    if target == "/headers":
        event(kind="plain", path=path, headers=hdrs)
        body = json.dumps({"headers": hdrs}).encode()
        return http.HTTPStatus.OK, [("content-type", "application/json")], body
    if target == "/reject":
        event(kind="reject", path=path, headers=hdrs)
        return http.HTTPStatus.FORBIDDEN, [("content-type", "text/plain")], b"upgrade refused by upstream"
    event(kind="handshake", path=path, headers=hdrs)
    return None


async def handler(ws, path=None):
    path = path or ws.path
    url = urllib.parse.urlparse(path)
    try:
        if url.path == "/echo":
            async for msg in ws:
                await ws.send(msg)
        elif url.path == "/hello-close":
            await ws.send("hello")
            await ws.close(1000, "bye")
        elif url.path == "/flood":
            mb = int(urllib.parse.parse_qs(url.query).get("mb", ["1"])[0])
            chunk = b"x" * 65536
            for _ in range(mb * 16):
                await ws.send(chunk)
            await ws.wait_closed()
    except websockets.ConnectionClosed:
        pass
    event(kind="close", path=path, code=ws.close_code)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, process_request=process_request,
                                max_size=None, ping_interval=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


asyncio.run(main())

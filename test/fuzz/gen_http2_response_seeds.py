#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_http2_response (test/fuzz/corpus/http2_response/):
HTTP/2 server byte streams, each prefixed with the target's option and split
bytes (the tuples' first two members) (see fuzz_http2_response.c). Run from the repository's root."""
import os
import struct

OUT = "test/fuzz/corpus/http2_response"

DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def lit(name, value):
    """A literal header field without indexing, new name (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def status(code):
    static = {200: b"\x88", 204: b"\x89", 206: b"\x8a", 304: b"\x8b", 400: b"\x8c", 404: b"\x8d", 500: b"\x8e"}
    if code in static:
        return static[code]
    v = str(code).encode()
    return b"\x08" + bytes([len(v)]) + v  # :status (static name 8), literal value


SETTINGS0 = frame(SETTINGS, 0, 0)
SETTINGS_ACK = frame(SETTINGS, ACK, 0)
PRE = SETTINGS0 + SETTINGS_ACK
OK_HEAD = status(200) + lit("content-type", "text/plain")

seeds = {
    "200-empty": (0, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, status(200))),
    "200-data": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"ok")),
    "200-data-split": (0, 3, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD + lit("content-length", "2"))
                       + frame(DATA, 0, 1, b"o") + frame(DATA, END_STREAM, 1, b"k")),
    "head": (1, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, OK_HEAD + lit("content-length", "10"))),
    "post-100-continue": (2, 0, PRE + frame(HEADERS, END_HEADERS, 1, status(100))
                          + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"done")),
    "chunked-trailers": (3, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, 0, 1, b"body")
                         + frame(HEADERS, END_HEADERS | END_STREAM, 1, lit("x-checksum", "1"))),
    "http10": (4, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"ten")),
    "grpc-ok": (5, 0, PRE + frame(HEADERS, END_HEADERS, 1, status(200) + lit("content-type", "application/grpc"))
                + frame(DATA, 0, 1, b"\x00\x00\x00\x00\x00")
                + frame(HEADERS, END_HEADERS | END_STREAM, 1, lit("grpc-status", "0"))),
    "grpc-trailers-only": (5, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, status(200)
                                          + lit("content-type", "application/grpc") + lit("grpc-status", "14")
                                          + lit("grpc-message", "unavailable"))),
    "conn-close": (6, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"bye")),
    "pipelined": (7, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"one")),
    "refused-stream": (0, 0, PRE + frame(RST_STREAM, 0, 1, struct.pack(">I", 7))),
    "rst-internal": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(RST_STREAM, 0, 1, struct.pack(">I", 2))),
    "goaway-unprocessed": (0, 0, PRE + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))),
    "goaway-after": (0x10, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, status(204))
                     + frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0))),
    "continuation": (0, 0, PRE + frame(HEADERS, 0, 1, status(200)) + frame(CONTINUATION, 0, 1, lit("x-a", "1"))
                     + frame(CONTINUATION, END_HEADERS, 1, lit("x-b", "2")) + frame(DATA, END_STREAM, 1, b"c")),
    "padded": (0, 0, PRE + frame(HEADERS, END_HEADERS | PADDED, 1, b"\x03" + OK_HEAD + b"\x00" * 3)
               + frame(DATA, END_STREAM | PADDED, 1, b"\x02ok\x00\x00")),
    "ping-window": (0, 0, PRE + frame(PING, 0, 0, b"12345678") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000))
                    + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000))
                    + frame(HEADERS, END_HEADERS | END_STREAM, 1, status(404))),
    "settings-values": (0x08, 0, frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 1) + struct.pack(">HI", 4, 16)
                                    + struct.pack(">HI", 5, 16384) + struct.pack(">HI", 1, 0))
                        + SETTINGS_ACK + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 1, b"x" * 40)),
    "push-promise": (0, 0, PRE + frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + b"\x82\x84")),
    "content-length-mismatch": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD + lit("content-length", "2"))
                                + frame(DATA, END_STREAM, 1, b"toolong")),
    "204-with-data": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, status(204)) + frame(DATA, END_STREAM, 1, b"no")),
    "uppercase-header": (0, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, status(200) + lit("X-Upper", "1"))),
    "no-status": (0, 0, PRE + frame(HEADERS, END_HEADERS | END_STREAM, 1, lit("content-type", "text/plain"))),
    "data-wrong-stream": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, END_STREAM, 3, b"x")
                          + frame(DATA, END_STREAM, 1, b"y")),
    "server-closes": (0x08, 0, PRE + frame(HEADERS, END_HEADERS, 1, OK_HEAD) + frame(DATA, 0, 1, b"partial")),
    "101": (0, 0, PRE + frame(HEADERS, END_HEADERS, 1, status(101))),
}

os.makedirs(OUT, exist_ok=True)
for name, (opts, split, body) in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([opts, split]) + body)

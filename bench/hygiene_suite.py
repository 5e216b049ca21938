#!/usr/bin/env python3
"""bench/hygiene_suite.py: the measuring half of bench/hygiene.sh.

hygiene.sh starts the proxies (SHARP, HAProxy, nginx) and this program
does the rest, all in one asyncio loop on loopback:

* one recording backend per proxy listener ("lane"): a raw HTTP/1.1 server
  that keeps every byte it receives, frames it with a strict RFC 9112
  parser, answers each complete request with 200 (and a marker header, so
  the client can tell a backend answer from one the proxy made up) and
  closes the connection on the first byte sequence that is not a valid
  HTTP/1.1 request;
* the hygiene corpus: hand-written smuggling / malformed-input cases plus
  seeded mutations of valid requests, each sent on a fresh connection, with
  the client-side outcome and what the backend got for that input;
* the slow-client phase: slowloris heads and trickled POST bodies, with the
  proxy's RSS and CPU from /proc.

Subcommands:
  bootstrap  print a SHARP bootstrap: the embedded default one (read from
             config/default_bootstrap.c) with one listener+cluster per lane
  run        run the phases against the proxies described by a JSON file

Nothing here is a pass/fail test: the output is a comparison table.
"""
import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import sys
import time

import yaml

# ---------------------------------------------------------------------------
# Strict HTTP/1.1 request parser (RFC 9112 / RFC 9110 grammar)

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HEX = frozenset(b"0123456789abcdefABCDEF")
TOKEN_RE = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
QUOTED_RE = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*" + TOKEN_RE + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN_RE
                        + rb"|" + QUOTED_RE + rb"))?)*)")
AUTHORITY = re.compile(rb"[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}")


class Incomplete(Exception):
    pass


class Invalid(Exception):
    pass


def is_token(b):
    return len(b) > 0 and all(c in TCHAR for c in b)


def valid_value(v):
    return all(c == 9 or 32 <= c <= 126 or c >= 128 for c in v)


def _line(buf, p, what):
    """The line starting at p (without CRLF) and the position after it."""
    e = buf.find(b"\r\n", p)
    if e < 0:
        rest = buf[p:]
        if b"\n" in rest or b"\r" in rest[:-1]:
            raise Invalid(f"bare CR or LF in {what}")
        raise Incomplete()
    line = bytes(buf[p:e])
    if b"\n" in line or b"\r" in line:
        raise Invalid(f"bare CR or LF in {what}")
    return line, e + 2


def _header_lines(buf, p, what):
    headers = []
    while True:
        line, p = _line(buf, p, what)
        if line == b"":
            return headers, p
        if line[0] in (0x20, 0x09):
            raise Invalid(f"obs-fold or leading whitespace in {what}")
        name, sep, value = line.partition(b":")
        if not sep:
            raise Invalid(f"{what} line without colon: {line[:40]!r}")
        if not is_token(name):
            raise Invalid(f"bad {what} name {name[:40]!r}")
        value = value.strip(b" \t")
        if not valid_value(value):
            raise Invalid(f"bad byte in {what} {name[:40]!r} value")
        headers.append((name.lower(), value))


def parse_request(buf, p=0, leading_crlf=False):
    """Parses one request at buf[p:]: returns (end, info) or raises
    Incomplete / Invalid. info: method, target, version, framing."""
    if leading_crlf:
        while buf[p:p + 2] == b"\r\n":
            p += 2
    line, p = _line(buf, p, "request line")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise Invalid(f"request line is not 'method SP target SP version': {line[:60]!r}")
    method, target, version = parts
    if not is_token(method):
        raise Invalid(f"bad method {method[:20]!r}")
    if not target or not all(33 <= c <= 126 for c in target):
        raise Invalid(f"bad request-target {target[:40]!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise Invalid(f"bad version {version[:20]!r}")
    if method == b"CONNECT":
        if not AUTHORITY.fullmatch(target):
            raise Invalid("CONNECT without authority-form target")
    elif target == b"*":
        if method != b"OPTIONS":
            raise Invalid("asterisk-form for a method other than OPTIONS")
    elif not (target.startswith(b"/") or target.lower().startswith((b"http://", b"https://"))):
        raise Invalid(f"request-target is neither origin- nor absolute-form: {target[:40]!r}")
    headers, p = _header_lines(buf, p, "header")
    hosts = [v for n, v in headers if n == b"host"]
    if len(hosts) > 1 or (version == b"HTTP/1.1" and len(hosts) != 1):
        raise Invalid(f"{len(hosts)} Host headers")
    te = [v for n, v in headers if n == b"transfer-encoding"]
    cl = [v for n, v in headers if n == b"content-length"]
    info = {"method": method, "target": target, "version": version}
    if te and cl:
        raise Invalid("both Transfer-Encoding and Content-Length")
    if method == b"CONNECT" and (te or cl):
        raise Invalid("CONNECT with content (what follows its head is tunnel data)")
    if te:
        if version != b"HTTP/1.1":
            raise Invalid("Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip(b" \t").lower() for v in te for c in v.split(b",")]
        if any(not is_token(c) for c in codings):
            raise Invalid(f"bad transfer-coding list {b', '.join(te)[:40]!r}")
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise Invalid(f"Transfer-Encoding not ending in one chunked: {b', '.join(te)[:40]!r}")
        info["framing"] = "chunked"
        while True:
            line, p = _line(buf, p, "chunk-size line")
            m = CHUNK_LINE.fullmatch(line)
            if not m:
                raise Invalid(f"bad chunk-size line {line[:40]!r}")
            size = int(m.group(1), 16)
            if size == 0:
                _, p = _header_lines(buf, p, "trailer")
                return p, info
            if len(buf) < p + size + 2:
                raise Incomplete()
            if buf[p + size:p + size + 2] != b"\r\n":
                raise Invalid("chunk data not followed by CRLF")
            p += size + 2
    if cl:
        if len(cl) != 1:
            raise Invalid(f"{len(cl)} Content-Length headers")
        if not cl[0].isdigit() or len(cl[0]) > 18:
            raise Invalid(f"bad Content-Length {cl[0][:30]!r}")
        n = int(cl[0])
        info["framing"] = f"cl={n}"
        if len(buf) < p + n:
            raise Incomplete()
        return p + n, info
    info["framing"] = "none"
    return p, info


def classify_input(data):
    """The reference reading of a client input: ('complete', n) when it is
    n complete valid requests and nothing else, ('incomplete', n) when the
    valid prefix needs more bytes, ('invalid', reason)."""
    p, n = 0, 0
    while p < len(data):
        try:
            p, _ = parse_request(data, p, leading_crlf=True)
        except Incomplete:
            return ("incomplete", n)
        except Invalid as e:
            return ("invalid", str(e))
        n += 1
    return ("complete", n)


# ---------------------------------------------------------------------------
# Recording backend

BACKEND_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-recorded: 1\r\n\r\n"


class CaseRecord:
    __slots__ = ("data", "complete", "invalid", "partial")

    def __init__(self):
        self.data = bytearray()
        self.complete = 0
        self.invalid = None
        self.partial = False


class Backend:
    """One lane's upstream. The lane sets `record` before sending an input;
    everything the backend receives until the next one is credited to it."""

    def __init__(self, port):
        self.port = port
        self.record = None
        self.last_rx = 0.0
        self.conns = {}  # writer -> buffer
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=4096,
                                                 reuse_address=True)

    async def _serve(self, reader, writer):
        buf = bytearray()
        self.conns[writer] = buf
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError, asyncio.CancelledError):
                    break  # cancelled: the run is over
                if not data:
                    break
                self.last_rx = time.monotonic()
                rec = self.record
                if rec is not None:
                    rec.data += data
                buf += data
                while buf:
                    try:
                        end, info = parse_request(buf, 0)
                    except Incomplete:
                        break
                    except Invalid as e:
                        if rec is not None:
                            rec.invalid = str(e)
                        writer.close()
                        return
                    del buf[:end]
                    if rec is not None:
                        rec.complete += 1
                    writer.write(BACKEND_RESPONSE + (b"" if info["method"] == b"HEAD" else b"ok"))
        finally:
            self.conns.pop(writer, None)
            writer.close()

    def pending_partial(self):
        return any(len(b) for b in self.conns.values())


# ---------------------------------------------------------------------------
# Client side of one input

def parse_responses(out):
    """Final responses in out: ([(status, from_backend)], state) with state
    'ok' (all parsed), 'partial' (an unfinished response at the end) or
    'garbage' (bytes that are not an HTTP/1.x response)."""
    res, pos = [], 0
    while pos < len(out):
        if not out.startswith(b"HTTP/1.", pos):
            return res, "garbage"
        e = out.find(b"\r\n\r\n", pos)
        if e < 0:
            return res, "partial"
        head = out[pos:e]
        try:
            status = int(head[9:12])
        except ValueError:
            return res, "garbage"
        low = head.lower()
        pos = e + 4
        if 100 <= status < 200:
            if status == 101:
                res.append((status, False))
                return res, "ok"
            continue
        if out.startswith(b"HTTP/1.", pos) or status in (204, 304):
            n = 0
        elif b"transfer-encoding: chunked" in low:
            n = None
            q = pos
            while True:
                le = out.find(b"\r\n", q)
                if le < 0:
                    return res, "partial"
                try:
                    size = int(out[q:le].split(b";")[0], 16)
                except ValueError:
                    return res, "garbage"
                q = le + 2
                if size == 0:
                    te = out.find(b"\r\n\r\n", q - 2)
                    if te < 0:
                        return res, "partial"
                    pos = te + 4
                    break
                q += size + 2
                if q > len(out):
                    return res, "partial"
        else:
            m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", low)
            if m:
                n = int(m.group(1))
            else:
                n = len(out) - pos  # delimited by close
        if n is not None:
            if pos + n > len(out):
                return res, "partial"
            pos += n
        res.append((status, b"\r\nx-recorded: 1" in low))
    return res, "ok"


QUIET = 0.2       # after a complete response, how long more data may take
SETTLE_IDLE = 0.05


async def send_input(port, data, timeout):
    """Sends data on a fresh connection; returns (raw response bytes, end)
    with end 'closed', 'reset', 'quiet' (answered, then nothing more) or
    'timeout' (no complete response and no close)."""
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    out = bytearray()
    end = "timeout"
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), timeout)
        sender = asyncio.ensure_future(loop.sock_sendall(s, data))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            res, state = parse_responses(bytes(out))
            answered = res and state == "ok"
            try:
                c = await asyncio.wait_for(loop.sock_recv(s, 65536), min(QUIET, left) if answered else left)
            except asyncio.TimeoutError:
                if answered:
                    end = "quiet"
                break
            except (ConnectionResetError, BrokenPipeError):
                end = "reset"
                break
            if not c:
                end = "closed"
                break
            out += c
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, OSError):
            pass
    except (ConnectionError, OSError, asyncio.TimeoutError):
        end = "reset" if not out else end
    finally:
        s.close()
    return bytes(out), end


class Result:
    """One proxy's handling of one input."""
    __slots__ = ("statuses", "from_backend", "end", "state", "be_bytes", "be_complete", "be_invalid",
                 "be_partial", "be_sample", "ref", "extra")

    def outcome(self):
        if self.from_backend:
            return "fwd"
        if self.statuses:
            return "refused" if self.statuses[0] >= 400 else "other"
        if self.state == "garbage":
            return "other"
        if self.end in ("closed", "reset"):
            return "refused"
        return "timeout"


async def run_one(lane_port, backend, data, timeout):
    rec = CaseRecord()
    backend.record = rec
    raw, end = await send_input(lane_port, data, timeout)
    # let whatever the proxy still forwards arrive, then detach the record
    t_end = time.monotonic() + 0.5
    await asyncio.sleep(SETTLE_IDLE)
    while time.monotonic() < t_end and time.monotonic() - backend.last_rx < SETTLE_IDLE:
        await asyncio.sleep(SETTLE_IDLE / 2)
    rec.partial = backend.pending_partial()
    backend.record = None
    res, state = parse_responses(raw)
    r = Result()
    r.statuses = [st for st, _ in res]
    r.from_backend = sum(1 for _, fb in res if fb)
    # a proxy that refuses a request for what it is (4xx, 501) cannot know
    # where the next request would start: it answers once and closes, and
    # anything it sends after that answers no request. (After a 502/503 for
    # an upstream failure a proxy may go on with the connection.)
    first_err = next((i for i, (st, fb) in enumerate(res) if (400 <= st < 500 or st == 501) and not fb), None)
    r.extra = 0 if first_err is None else len(res) - first_err - 1
    r.end, r.state = end, state
    r.be_bytes, r.be_complete, r.be_invalid, r.be_partial = len(rec.data), rec.complete, rec.invalid, rec.partial
    r.be_sample = bytes(rec.data[:400]) if rec.invalid else b""
    return r


# ---------------------------------------------------------------------------
# Corpus

H = b"POST /c HTTP/1.1\r\nHost: a\r\n"
G = b"GET /c HTTP/1.1\r\nHost: a\r\n"
SMUG = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def _cl_te(te_line):
    """CL.TE shape with one Transfer-Encoding spelling: a Content-Length
    reader sees one request with SMUG in its body, a chunked reader two."""
    body = b"0\r\n\r\n" + SMUG
    return H + b"Content-Length: %d\r\n" % len(body) + te_line + b"\r\n\r\n" + body


def _te_only(te_line):
    """TE with an obfuscated spelling and no Content-Length: a hop that does
    not see chunked reads a body-less request and SMUG-bearing chunk as the
    next request."""
    chunk = SMUG
    return H + te_line + b"\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n"


def _te_cl(cl_line=b"Content-Length: 4"):
    chunk = SMUG
    return H + b"Transfer-Encoding: chunked\r\n" + cl_line + b"\r\n\r\n" + b"%x\r\n" % len(chunk) + chunk + \
        b"\r\n0\r\n\r\n"


def _chunked(body_framing):
    return H + b"Transfer-Encoding: chunked\r\n\r\n" + body_framing


def corpus():
    """(id, bytes, ambiguous-framing?) for the hand-written cases. Sources:
    PortSwigger's request smuggling research (CL.TE, TE.CL, TE.TE and
    their obfuscations), the HTTP Garden's differential-fuzzing findings
    (bare CR/LF, NUL, whitespace before colon, chunk-size and extension
    edge cases), RFC 9112 sections 2-7 (what a recipient must refuse)."""
    c = []

    def add(cid, data, amb=False):
        c.append((cid, data, amb))

    # valid baselines: every proxy should forward these
    add("ok-get", G + b"\r\n")
    add("ok-post-cl", H + b"Content-Length: 3\r\n\r\nabc")
    add("ok-post-chunked", _chunked(b"3\r\nabc\r\n0\r\n\r\n"))
    add("ok-chunk-ext", _chunked(b"3;a=b;c=\"d\"\r\nabc\r\n0\r\n\r\n"))
    add("ok-trailers", _chunked(b"3\r\nabc\r\n0\r\nX-T: v\r\n\r\n"))
    add("ok-pipelined", G + b"\r\n" + SMUG)
    add("ok-cl-then-next", H + b"Content-Length: 5\r\n\r\nhello" + SMUG)
    add("ok-absolute-form", b"GET http://a/c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("ok-expect-100", H + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
    add("ok-te-case-ows", H + b"transfer-encoding: \tChunKed \r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    add("ok-cl-leading-zeros", H + b"Content-Length: 003\r\n\r\nabc")
    add("ok-obs-text-value", G + b"X-A: caf\xc3\xa9\r\n\r\n")
    add("ok-leading-crlf", b"\r\n" + G + b"\r\n")
    add("ok-http10-no-host", b"GET /c HTTP/1.0\r\n\r\n")

    # CL.TE / TE.CL / TE.TE
    add("cl-te", _cl_te(b"Transfer-Encoding: chunked"), True)
    add("te-cl", _te_cl(), True)
    add("te-cl-zero", _te_cl(b"Content-Length: 0"), True)
    add("te-te-identity", _cl_te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"), True)
    add("te-te-cow", _cl_te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow"), True)
    add("te-chunked-identity", _cl_te(b"Transfer-Encoding: chunked, identity"), True)
    add("te-identity-chunked", _cl_te(b"Transfer-Encoding: identity, chunked"), True)
    add("te-gzip-cl", H + b"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", True)
    add("te-gzip", _te_only(b"Transfer-Encoding: gzip"), True)
    add("te-gzip-chunked", _te_only(b"Transfer-Encoding: gzip, chunked"), True)
    add("te-identity", _te_only(b"Transfer-Encoding: identity"), True)
    add("te-x", _te_only(b"Transfer-Encoding: x"), True)
    add("te-xchunked", _te_only(b"Transfer-Encoding: xchunked"), True)
    add("te-chunkedx", _te_only(b"Transfer-Encoding: chunkedx"), True)
    add("te-nbsp-chunked", _cl_te(b"Transfer-Encoding: \xa0chunked"), True)
    add("te-chunked-nbsp", _cl_te(b"Transfer-Encoding: chunked\xa0"), True)
    add("te-vtab", _cl_te(b"Transfer-Encoding:\x0bchunked"), True)
    add("te-formfeed", _cl_te(b"Transfer-Encoding:\x0cchunked"), True)
    add("te-quoted", _cl_te(b"Transfer-Encoding: \"chunked\""), True)
    add("te-space-colon", _cl_te(b"Transfer-Encoding : chunked"), True)
    add("te-tab-colon", _cl_te(b"Transfer-Encoding\t: chunked"), True)
    add("te-dup", _te_only(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"), True)
    add("te-dup-list", _te_only(b"Transfer-Encoding: chunked, chunked"), True)
    add("te-obs-fold", _cl_te(b"Transfer-Encoding:\r\n chunked"), True)
    add("te-leading-space-line", _cl_te(b" Transfer-Encoding: chunked"), True)
    add("te-underscore", _cl_te(b"Transfer_Encoding: chunked"), True)
    add("te-nul-name", _cl_te(b"Transfer-Encoding\x00: chunked"), True)
    add("te-bare-lf-hidden", _cl_te(b"X: y\nTransfer-Encoding: chunked"), True)
    add("te-bare-cr-hidden", _cl_te(b"X: y\rTransfer-Encoding: chunked"), True)
    add("te-nameless-hidden", _cl_te(b": x\r\nTransfer-Encoding: chunked"), True)
    add("te-http10", b"POST /c HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(SMUG)
        + SMUG + b"\r\n0\r\n\r\n", True)
    add("te-connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", True)
    add("connection-cl", H + b"Connection: Content-Length\r\nContent-Length: %d\r\n\r\n" % len(SMUG) + SMUG, True)
    add("connection-te", _te_only(b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked"), True)

    # Content-Length
    add("cl-cl-differ", H + b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUG) + SMUG, True)
    add("cl-cl-same", H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", True)
    add("cl-list", H + b"Content-Length: 3, 3\r\n\r\nabc", True)
    add("cl-list-differ", H + b"Content-Length: 0, %d\r\n\r\n" % len(SMUG) + SMUG, True)
    add("cl-plus", H + b"Content-Length: +3\r\n\r\nabc", True)
    add("cl-negative", H + b"Content-Length: -1\r\n\r\n" + SMUG, True)
    add("cl-hex", H + b"Content-Length: 0x3\r\n\r\nabc", True)
    add("cl-2^63", H + b"Content-Length: 9223372036854775808\r\n\r\n" + SMUG, True)
    add("cl-2^64", H + b"Content-Length: 18446744073709551616\r\n\r\n" + SMUG, True)
    add("cl-2^64+3", H + b"Content-Length: 18446744073709551619\r\n\r\nabc" + SMUG, True)
    add("cl-space-inside", H + b"Content-Length: 1 0\r\n\r\n0123456789", True)
    add("cl-empty", H + b"Content-Length:\r\n\r\n" + SMUG, True)
    add("cl-trailing-garbage", H + b"Content-Length: 3x\r\n\r\nabc", True)
    add("cl-space-colon", H + b"Content-Length : %d\r\n\r\n" % len(SMUG) + SMUG, True)
    add("cl-nbsp", H + b"Content-Length: \xa03\r\n\r\nabc", True)
    add("cl-get-body", G + b"Content-Length: %d\r\n\r\n" % len(SMUG) + SMUG, True)

    # chunked body framing
    add("chunk-size-2^64", _chunked(b"10000000000000000\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-overflow", _chunked(b"fffffffffffffffff3\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-negative", _chunked(b"-3\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-0x", _chunked(b"0x3\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-space", _chunked(b"3 \r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-leading-space", _chunked(b" 3\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-not-hex", _chunked(b"g\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-size-empty", _chunked(b"\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-lf-only", _chunked(b"3\nabc\n0\n\n"), True)
    add("chunk-ext-nul", _chunked(b"3;a\x00b\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-ext-ctl", _chunked(b"3;a=\x01\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-ext-bare-lf", _chunked(b"3;a\nabc\r\n0\r\n\r\n"), True)
    add("chunk-ext-bare-cr", _chunked(b"3;a\rabc\r\n0\r\n\r\n"), True)
    add("chunk-ext-unterminated-quote", _chunked(b"3;a=\"b\r\nabc\r\n0\r\n\r\n"), True)
    add("chunk-data-overrun", _chunked(b"3\r\nabcdef\r\n0\r\n\r\n"), True)
    add("chunk-data-no-crlf", _chunked(b"3\r\nabc0\r\n\r\n" + SMUG), True)
    add("chunk-data-bare-lf", _chunked(b"3\r\nabc\n0\r\n\r\n"), True)
    add("chunk-trailer-cl", _chunked(b"0\r\nContent-Length: %d\r\n\r\n" % len(SMUG) + SMUG), True)
    add("chunk-trailer-bad", _chunked(b"0\r\nX-T : v\r\n\r\n"), True)
    add("chunk-last-no-crlf", _chunked(b"0\r\n" + SMUG), True)

    # header names and values
    add("empty-name", G + b": x\r\n\r\n")
    add("space-before-colon", G + b"X-A : b\r\n\r\n")
    add("tab-before-colon", G + b"X-A\t: b\r\n\r\n")
    add("no-colon", G + b"X-A b\r\n\r\n")
    add("space-in-name", G + b"X A: b\r\n\r\n")
    add("quote-in-name", G + b"X\"A: b\r\n\r\n")
    add("ctl-in-name", G + b"X\x01A: b\r\n\r\n")
    add("nul-in-name", G + b"X\x00A: b\r\n\r\n")
    add("nul-in-value", G + b"X-A: b\x00c\r\n\r\n")
    add("ctl-in-value", G + b"X-A: b\x01c\r\n\r\n")
    add("del-in-value", G + b"X-A: b\x7fc\r\n\r\n")
    add("cr-in-value", G + b"X-A: b\rc\r\n\r\n")
    add("obs-fold", G + b"X-A: b\r\n c\r\n\r\n")
    add("obs-fold-tab", G + b"X-A: b\r\n\tc\r\n\r\n")
    add("leading-space-first-line", b"GET /c HTTP/1.1\r\n Host: a\r\n\r\n")
    add("underscore-name", G + b"X_A: b\r\n\r\n")
    add("too-many-headers", G + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n")
    add("long-header-value", G + b"X-A: " + b"v" * 70000 + b"\r\n\r\n")

    # line endings
    add("bare-lf-all", b"GET /c HTTP/1.1\nHost: a\n\n")
    add("bare-lf-header", G + b"X-A: b\nX-B: c\r\n\r\n")
    add("bare-lf-end", G + b"\n")
    add("bare-cr-request-line", b"GET /c HTTP/1.1\rHost: a\r\n\r\n")
    add("bare-cr-end", G + b"\r\r")

    # Host
    add("two-hosts", b"GET /c HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    add("two-hosts-same", b"GET /c HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n")
    add("missing-host", b"GET /c HTTP/1.1\r\nX-A: b\r\n\r\n")
    add("host-with-space", b"GET /c HTTP/1.1\r\nHost: a b\r\n\r\n")
    add("host-userinfo", b"GET /c HTTP/1.1\r\nHost: u@a\r\n\r\n")
    add("host-bad-port", b"GET /c HTTP/1.1\r\nHost: a:99999x\r\n\r\n")
    add("absolute-form-other-host", b"GET http://b/c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("absolute-form-no-host", b"GET http://b/c HTTP/1.1\r\n\r\n")
    add("absolute-form-bad-scheme", b"GET gopher://b/c HTTP/1.1\r\nHost: a\r\n\r\n")

    # request line
    add("version-1.2", b"GET /c HTTP/1.2\r\nHost: a\r\n\r\n")
    add("version-2.0", b"GET /c HTTP/2.0\r\nHost: a\r\n\r\n")
    add("version-0.9", b"GET /c HTTP/0.9\r\nHost: a\r\n\r\n")
    add("version-lower", b"GET /c http/1.1\r\nHost: a\r\n\r\n")
    add("version-leading-zero", b"GET /c HTTP/01.1\r\nHost: a\r\n\r\n")
    add("version-trailing-space", b"GET /c HTTP/1.1 \r\nHost: a\r\n\r\n")
    add("version-garbage", b"GET /c HTTP/1.1x\r\nHost: a\r\n\r\n")
    add("no-version", b"GET /c\r\nHost: a\r\n\r\n")
    add("h09-request", b"GET /c\r\n")
    add("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    add("double-space", b"GET  /c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("tab-separators", b"GET\t/c\tHTTP/1.1\r\nHost: a\r\n\r\n")
    add("method-paren", b"G(T /c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("method-nul", b"G\x00T /c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("method-lowercase", b"get /c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("method-unknown", b"FOO /c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-no-slash", b"GET c HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-space", b"GET /c d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-ctl", b"GET /c\x01d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-nul", b"GET /c\x00d HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-high-byte", b"GET /c\xffd HTTP/1.1\r\nHost: a\r\n\r\n")
    add("target-fragment", b"GET /c#f HTTP/1.1\r\nHost: a\r\n\r\n")
    add("long-request-line", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    add("many-leading-crlf", b"\r\n" * 50 + G + b"\r\n")
    add("upgrade-h2c", G + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    return c


INTERESTING = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x3a, 0x2c, 0x3b, 0x0b, 0x0c, 0x7f, 0xa0, 0xff, 0x22, 0x2f, 0x5f,
               0x2d, 0x2b, 0x30, 0x39, 0x66, 0x41]

MUTATION_BASES = [
    b"GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: hyg/1\r\nAccept: */*\r\n\r\n",
    b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\nGET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-Custom: v1, v2\r\n\r\nabcde",
    b"GET http://example.com/abs HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"DELETE /item/1 HTTP/1.1\r\nHost: example.com\r\nCookie: a=b; c=d\r\nAuthorization: Bearer x\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nabcdGET /next HTTP/1.1\r\nHost: example.com\r\n\r\n",
]


def mutate(rng, base):
    data = bytearray(base)
    head_end = data.find(b"\r\n\r\n") + 4
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        # mostly the request line and headers; sometimes the whole message
        hi = len(data) if rng.random() < 0.2 else min(head_end, len(data))
        if hi <= 1:
            hi = len(data)
        i = rng.randrange(hi)
        op = rng.randrange(7)
        b = rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randrange(256)
        if op == 0:
            data[i] = b
        elif op == 1:
            data[i:i] = bytes([b])
        elif op == 2:
            del data[i:i + rng.randint(1, 3)]
        elif op == 3:  # duplicate the line around i (a header twice, a request line twice)
            s = data.rfind(b"\n", 0, i) + 1
            e = data.find(b"\n", i)
            if e >= 0:
                data[e + 1:e + 1] = data[s:e + 1]
        elif op == 4:  # duplicate a short range
            n = rng.randint(1, 8)
            data[i:i] = data[i:i + n]
        elif op == 5:  # change a letter's case
            if chr(data[i]).isalpha():
                data[i] ^= 0x20
            else:
                data[i] = b
        else:  # turn a CRLF into a bare LF or a bare CR
            j = data.find(b"\r\n", i)
            if j >= 0:
                if rng.random() < 0.5:
                    del data[j]
                else:
                    del data[j + 1]
    return bytes(data)


def mutations(seed, count):
    rng = random.Random(seed)
    seen = set(MUTATION_BASES)
    out = []
    attempts = 0
    while len(out) < count and attempts < count * 20:
        attempts += 1
        bi = rng.randrange(len(MUTATION_BASES))
        m = mutate(rng, MUTATION_BASES[bi])
        if m in seen or not m:
            continue
        seen.add(m)
        out.append(("mut-%04d-b%d" % (len(out), bi), m, False))
    return out


# ---------------------------------------------------------------------------
# Running the corpus

def summarize_result(r):
    if r is None:
        return "-"
    st = ",".join(str(s) for s in r.statuses) or "none"
    if r.statuses and r.outcome() != "fwd":
        st += "p"  # the proxy's own answer
    if r.state == "garbage":
        st += "+non-http"
    tail = {"closed": "/close", "reset": "/reset", "quiet": "", "timeout": "/timeout"}[r.end]
    be = f" up={r.be_complete}req/{r.be_bytes}B"
    if r.be_invalid:
        be += " INVALID"
    if r.be_partial and not r.be_invalid:
        be += "+partial"
    return st + tail + be


async def lane_worker(queue, proxy, lane, results, args):
    port, backend = lane
    while True:
        try:
            idx, (cid, data, amb) = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        ref = classify_input(data)
        timeout = args.incomplete_timeout if ref[0] == "incomplete" else args.timeout
        r = await run_one(port, backend, data, timeout)
        r.ref = ref
        results[proxy["name"]][idx] = r


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def desynced(r):
    """The backend parsed a different number of requests than the client got
    backend answers for. An answer that is not HTTP/1.x (nginx answers an
    HTTP/0.9 request with the bare body) cannot be counted and is left out."""
    return r.state != "garbage" and r.be_complete != r.from_backend


def analyse(name, cases, res, lo, hi):
    """Counters for cases[lo:hi] of one proxy."""
    k = dict.fromkeys(["inputs", "fwd", "refused", "other", "ref_fwd", "ref_partial", "invalid_up",
                       "desync", "extra", "hang", "waited"], 0)
    for i in range(lo, hi):
        r = res[i]
        o = r.outcome()
        k["inputs"] += 1
        if o == "timeout":
            if r.ref[0] == "complete":
                k["hang"] += 1
            else:
                k["waited"] += 1
        else:
            k[o] += 1
        if r.be_invalid:
            k["invalid_up"] += 1
        elif o == "refused" and r.be_bytes:
            if r.be_complete:
                k["ref_fwd"] += 1
            else:
                k["ref_partial"] += 1
        if desynced(r):
            k["desync"] += 1
        if r.extra:
            k["extra"] += 1
    return k


def esc(b, limit=300):
    s = repr(b[:limit])[2:-1]
    return s + (f"...(+{len(b) - limit}B)" if len(b) > limit else "")


async def run_corpus(conf, backends, args):
    cases = corpus()
    n_corpus = len(cases)
    cases += mutations(args.seed, args.mutations)
    results = {p["name"]: [None] * len(cases) for p in conf["proxies"]}
    workers = []
    for p in conf["proxies"]:
        q = asyncio.Queue()
        for i, c in enumerate(cases):
            q.put_nowait((i, c))
        for lane in p["lanes"]:
            workers.append(lane_worker(q, p, (lane["listen"], backends[lane["backend"]]), results, args))
    t0 = time.monotonic()
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - t0
    names = [p["name"] for p in conf["proxies"]]
    alive = {}
    for p in conf["proxies"]:
        alive[p["name"]] = all(pid_alive(x) for x in p["watch_pids"])

    lines = []
    w = lines.append
    w(f"corpus: {n_corpus} hand-written cases ({sum(1 for c in cases[:n_corpus] if c[2])} with ambiguous framing) "
      f"+ {len(cases) - n_corpus} mutations (seed {args.seed}), {elapsed:.0f} s, "
      f"{len(conf['proxies'][0]['lanes'])} lanes per proxy, timeout {args.timeout:g} s "
      f"({args.incomplete_timeout:g} s for inputs the reference parser finds unfinished)")
    cols = [("inputs", "inputs"), ("fwd", "fwd"), ("refused", "refused"), ("other", "other"),
            ("ref_fwd", "refused+fwd"), ("ref_partial", "refused+partial"), ("invalid_up", "invalid-up"),
            ("desync", "desync"), ("extra", "extra-resp"), ("hang", "hangs"), ("waited", "waited")]
    for title, lo, hi in (("hand-written cases", 0, n_corpus), ("mutations", n_corpus, len(cases)),
                          ("all inputs", 0, len(cases))):
        w("")
        w(title)
        w("%-8s " % "proxy" + " ".join("%*s" % (max(len(h), 6), h) for _, h in cols) + "  alive")
        for n in names:
            k = analyse(n, cases, results[n], lo, hi)
            w("%-8s " % n + " ".join("%*d" % (max(len(h), 6), k[c]) for c, h in cols)
              + "  " + ("yes" if alive[n] else "NO"))
    # agreement with the peers
    w("")
    w("SHARP against each peer (all inputs): sharp forwards & peer refuses / sharp refuses & peer forwards")
    for n in names[1:]:
        a = sum(1 for i in range(len(cases)) if results[names[0]][i].outcome() == "fwd"
                and results[n][i].outcome() == "refused")
        b = sum(1 for i in range(len(cases)) if results[names[0]][i].outcome() == "refused"
                and results[n][i].outcome() == "fwd")
        w(f"  vs {n:8s} {a:5d} / {b:5d}")

    # details: every hand-written case, and every mutation where something
    # is interesting (a problem for any proxy, or SHARP and a peer disagree)
    d = []
    d.append("# bench/hygiene.sh details. Per input: id, flags, then per proxy:")
    d.append("#   statuses (p: answered by the proxy itself, no 'p': the backend's answers relayed)")
    d.append("#   /close /reset /timeout how the connection ended ('' = still open and quiet)")
    d.append("#   up=<complete requests the backend parsed>req/<bytes it received>B, INVALID = the backend")
    d.append("#   got bytes that are not a valid HTTP/1.1 request, +partial = an unfinished request left")
    d.append("# flags: AMB ambiguous framing case, DIFF sharp and a peer disagree on forward vs refuse,")
    d.append("#   RF refused but a complete request reached the backend, RP refused after a partial request")
    d.append("#   went upstream, INV invalid bytes upstream, DESYNC backend requests != relayed answers,")
    d.append("#   EXTRA the proxy sent more responses after its own 4xx/501 refusal")
    d.append("#   HANG no answer on a complete valid input, WAIT no answer on unfinished/invalid input")
    d.append("# ref = the reference strict parser's reading of the input")
    d.append("")
    for i, (cid, data, amb) in enumerate(cases):
        rs = {n: results[n][i] for n in names}
        flags = []
        if amb:
            flags.append("AMB")
        so = rs[names[0]].outcome()
        if any((so == "fwd") != (rs[n].outcome() == "fwd") and "refused" in (so, rs[n].outcome())
               for n in names[1:]):
            flags.append("DIFF")
        for n in names:
            r = rs[n]
            o = r.outcome()
            if r.be_invalid:
                flags.append(f"INV:{n}")
            elif o == "refused" and r.be_complete:
                flags.append(f"RF:{n}")
            elif o == "refused" and r.be_bytes:
                flags.append(f"RP:{n}")
            if desynced(r):
                flags.append(f"DESYNC:{n}")
            if r.extra:
                flags.append(f"EXTRA:{n}")
            if o == "timeout":
                flags.append(("HANG:" if r.ref[0] == "complete" else "WAIT:") + n)
        if i >= n_corpus and not any(f.startswith(("DIFF", "RF", "RP", "INV", "DESYNC", "EXTRA", "HANG", "WAIT")) for f in flags):
            continue
        ref = rs[names[0]].ref
        d.append(f"{cid}  [{' '.join(flags)}]  ref={ref[0]}" + (f" ({ref[1]})" if ref[0] == "invalid" else ""))
        d.append(f"    input: {esc(data)}")
        for n in names:
            r = rs[n]
            d.append(f"    {n:8s} {summarize_result(r)}"
                     + (f"  upstream-invalid: {r.be_invalid}; got: {esc(r.be_sample, 200)}" if r.be_invalid else ""))
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "hygiene-details.txt"), "w") as f:
        f.write("\n".join(d) + "\n")
    return lines


# ---------------------------------------------------------------------------
# Slow clients

HZ = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


class SlowConn:
    __slots__ = ("kind", "opened", "closed", "writer", "failed", "answer")


async def slow_client(kind, port, interval, sem, conns, stop):
    c = SlowConn()
    c.kind, c.closed, c.writer, c.failed, c.answer = kind, None, None, False, b""
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, asyncio.TimeoutError):
            c.failed = True
            c.opened = time.monotonic()
            c.closed = c.opened
            conns.append(c)
            return
    c.opened = time.monotonic()
    c.writer = writer
    conns.append(c)
    if kind == "slowloris":
        writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    else:
        writer.write(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")

    async def trickle():
        rng = random.Random(id(c))
        await asyncio.sleep(rng.random() * interval)
        while True:
            writer.write(b"a")
            await asyncio.sleep(interval)

    t = asyncio.ensure_future(trickle())
    try:
        while True:
            rd = asyncio.ensure_future(reader.read(4096))
            done, _ = await asyncio.wait({rd, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                rd.cancel()
                break
            try:
                data = rd.result()
            except (ConnectionError, OSError):
                data = b""
            if not data:
                c.closed = time.monotonic()
                break
            if not c.answer:
                c.answer = data.split(b"\r\n", 1)[0][:40]
    finally:
        t.cancel()
        writer.close()


async def run_slow(conf, backends, args):
    lines = []
    w = lines.append
    w(f"slow clients: {args.n} slowloris heads (a byte every {args.interval:g} s) + {args.n} POSTs with "
      f"Content-Length 1000000 trickled the same way, held {args.hold:g} s after the last one opened; "
      f"RSS/CPU of the proxy process (nginx: its worker)")
    fmt = "%-8s %9s %9s %9s %6s %10s %11s %9s %9s %8s %6s"
    w(fmt % ("proxy", "RSS0 KiB", "peak KiB", "after KiB", "CPU s", "loris open", "loris ended", "POST open",
             "up conns", "up conns", "open"))
    w(fmt % ("", "", "", f"+{args.after:g}s", "", f"@{args.hold:g}s", "median s", f"@{args.hold:g}s", "peak",
             f"+{args.after:g}s", "fails"))
    notes = []
    for p in conf["proxies"]:
        pid = p["rss_pid"]
        port = p["lanes"][0]["listen"]
        await asyncio.sleep(1)
        rss0, cpu0 = rss_kib(pid), cpu_s(pid)
        stop = asyncio.get_running_loop().create_future()
        conns = []
        sem = asyncio.Semaphore(64)
        tasks = [asyncio.ensure_future(slow_client(k, port, args.interval, sem, conns, stop))
                 for i in range(args.n) for k in ("slowloris", "post")]
        backend = backends[p["lanes"][0]["backend"]]
        peak, up_peak = rss0, 0
        # wait for every connection to be opened (or to fail)
        while len(conns) < len(tasks):
            await asyncio.sleep(0.25)
            peak, up_peak = max(peak, rss_kib(pid)), max(up_peak, len(backend.conns))
        t_open = time.monotonic()
        while time.monotonic() < t_open + args.hold:
            await asyncio.sleep(0.5)
            peak, up_peak = max(peak, rss_kib(pid)), max(up_peak, len(backend.conns))
        loris = [c for c in conns if c.kind == "slowloris"]
        posts = [c for c in conns if c.kind == "post"]
        loris_open = sum(1 for c in loris if c.closed is None and not c.failed)
        post_open = sum(1 for c in posts if c.closed is None and not c.failed)
        fails = sum(1 for c in conns if c.failed)
        ages = [c.closed - c.opened for c in loris if c.closed is not None and not c.failed]
        med = "%.1f" % statistics.median(ages) if ages else "-"
        stop.set_result(True)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(args.after)
        rss2, cpu2 = rss_kib(pid), cpu_s(pid)
        alive = all(pid_alive(x) for x in p["watch_pids"])
        for kind, group in (("slowloris", loris), ("post", posts)):
            ended = [c for c in group if c.closed is not None and not c.failed]
            if not ended:
                continue
            how = {}
            for c in ended:
                key = c.answer.decode("latin-1") or "closed without a response"
                how[key] = how.get(key, 0) + 1
            t = sorted(c.closed - c.opened for c in ended)
            notes.append(f"  {p['name']}: {len(ended)} {kind} connections ended by the proxy after "
                         f"{t[0]:.1f}-{t[-1]:.1f} s: " + ", ".join(f"{k!r} x{v}" for k, v in sorted(how.items())))
        w(fmt % (p["name"], rss0, peak, rss2, "%.2f" % (cpu2 - cpu0), loris_open, med, post_open, up_peak,
                 len(backend.conns), fails) + ("" if alive else "  (process gone)"))
    return lines + notes


# ---------------------------------------------------------------------------

async def main_run(args):
    with open(args.conf) as f:
        conf = json.load(f)
    backends = {}
    for p in conf["proxies"]:
        for lane in p["lanes"]:
            b = Backend(lane["backend"])
            await b.start()
            backends[lane["backend"]] = b
    out = []
    if "corpus" in args.phases:
        out += await run_corpus(conf, backends, args)
    if "slow" in args.phases:
        if out:
            out.append("")
        out += await run_slow(conf, backends, args)
    for b in backends.values():
        b.server.close()
        for wr in list(b.conns):
            wr.close()
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(args.results, "hygiene-summary.txt"), "w") as f:
        f.write(text)


def main_bootstrap(args):
    """The embedded default bootstrap, its C string literals joined, with
    the listener and cluster repeated per lane on loopback ports."""
    src = open(args.default).read()
    body = src[src.index("sharp_default_bootstrap_yaml[] ="):]
    body = body[:body.index(";\n")]
    text = "".join(bytes(m, "latin-1").decode("unicode_escape") for m in re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    boot = yaml.safe_load(text)
    boot["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": args.admin}
    sr = boot["static_resources"]
    l0, c0 = sr["listeners"][0], sr["clusters"][0]
    sr["listeners"], sr["clusters"] = [], []
    for i, spec in enumerate(args.lane):
        listen, backend = (int(x) for x in spec.split(":"))
        lst = json.loads(json.dumps(l0))
        lst["name"] = f"lane{i}"
        lst["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen}
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        for vh in hcm["route_config"]["virtual_hosts"]:
            for r in vh["routes"]:
                r["route"]["cluster"] = f"lane{i}"
        cl = json.loads(json.dumps(c0))
        cl["name"] = cl["load_assignment"]["cluster_name"] = f"lane{i}"
        cl["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1", "port_value": backend}
        sr["listeners"].append(lst)
        sr["clusters"].append(cl)
    yaml.safe_dump(boot, sys.stdout, sort_keys=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bootstrap")
    b.add_argument("--default", required=True, help="config/default_bootstrap.c")
    b.add_argument("--admin", type=int, required=True)
    b.add_argument("--lane", action="append", required=True, help="listen_port:backend_port")
    r = sub.add_parser("run")
    r.add_argument("--conf", required=True, help="JSON: proxies [{name, rss_pid, watch_pids, lanes "
                                                 "[{listen, backend}]}]")
    r.add_argument("--results", required=True)
    r.add_argument("--phases", default="corpus,slow")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--mutations", type=int, default=2000)
    r.add_argument("--timeout", type=float, default=3.0)
    r.add_argument("--incomplete-timeout", type=float, default=1.0)
    r.add_argument("--n", type=int, default=2000)
    r.add_argument("--interval", type=float, default=2.0)
    r.add_argument("--hold", type=float, default=15.0)
    r.add_argument("--after", type=float, default=5.0)
    args = ap.parse_args()
    if args.cmd == "bootstrap":
        main_bootstrap(args)
    else:
        os.makedirs(args.results, exist_ok=True)
        asyncio.run(main_run(args))


if __name__ == "__main__":
    main()

"""The benchmark's app: a tiny HTTP/1.1 server on raw asyncio (uvloop when installed).

It costs a few microseconds per request, so whatever the proxy in front of it spends is what the
benchmark sees. Routes:

    GET  /big       1 MiB body (Content-Length), sent in one write
    POST /upload    reads the whole body (Content-Length or chunked), answers its size
    GET  /ws        WebSocket echo (RFC 6455: text, binary, ping -> pong, close)
    *    any other  a 13-byte ``hello, world`` body

Keep-alive always; ``Connection: close`` honoured. Not a general-purpose server: no pipelining
guarantees beyond in-order answers, no request-line validation beyond what the routes need.

    python bench/upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import signal

SMALL_BODY = b"hello, world\n"
BIG_SIZE = 1024 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _response(body: bytes, content_type: bytes = b"text/plain") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


SMALL = _response(SMALL_BODY)
BIG = _response(bytes(range(256)) * (BIG_SIZE // 256), b"application/octet-stream")
_CLOSE_SMALL = SMALL.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class Http(asyncio.Protocol):
    """One connection: parse requests out of ``buf``; in WebSocket mode, frames instead."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.body_left = 0  # bytes of a Content-Length body still to discard
        self.chunked = False  # inside a chunked body
        self.pending: bytes | None = None  # answer to send once the body is consumed
        self.received = 0
        self.close_after = False
        self.ws = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.ws:
            self._frames()
            return
        while self.transport is not None and not self.ws:
            if self.body_left or self.chunked:
                if not self._consume_body():
                    return
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 1 << 20:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            self._request(head)
        if self.ws and self.buf:
            self._frames()

    def _request(self, head: str) -> None:
        assert self.transport is not None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        method, target = parts[0], parts[1] if len(parts) > 1 else "/"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.close_after = headers.get("connection", "").lower() == "close"
        path = target.split("?", 1)[0]
        if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _WS_GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.ws = True
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked = True
        else:
            self.body_left = int(headers.get("content-length", "0") or 0)
        if method == "POST" and path == "/upload":
            self.pending = None  # answered with the size once read
        else:
            self.pending = BIG if path == "/big" else (_CLOSE_SMALL if self.close_after else SMALL)
        self.received = 0
        if not (self.body_left or self.chunked):
            self._answer()

    def _consume_body(self) -> bool:
        """Eat body bytes; True once the body is complete (the answer is then sent)."""
        if self.body_left:
            take = min(self.body_left, len(self.buf))
            del self.buf[:take]
            self.body_left -= take
            self.received += take
            if self.body_left:
                return False
            self._answer()
            return True
        while True:  # chunked: size line, data, CRLF; a 0 size ends the body (no trailers expected)
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(self.buf[:end]).split(b";", 1)[0], 16)
            if size == 0:
                if len(self.buf) < end + 4:
                    return False
                del self.buf[: end + 4]
                self.chunked = False
                self._answer()
                return True
            if len(self.buf) < end + 2 + size + 2:
                return False
            del self.buf[: end + 2 + size + 2]
            self.received += size

    def _answer(self) -> None:
        assert self.transport is not None
        if self.pending is None:
            body = b'{"bytes": ' + str(self.received).encode() + b"}\n"
            self.transport.write(_response(body, b"application/json"))
        else:
            self.transport.write(self.pending)
        if self.close_after:
            self.transport.close()
            self.transport = None

    # -- WebSocket echo (server frames are unmasked, client frames masked: RFC 6455 §5.3) ----------

    def _frames(self) -> None:
        buf = self.buf
        while self.transport is not None and len(buf) >= 2:
            opcode, length, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
            masked = buf[1] & 0x80
            if length == 126:
                if len(buf) < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            need = pos + (4 if masked else 0) + length
            if len(buf) < need:
                return
            payload = bytes(buf[pos + (4 if masked else 0) : need])
            if masked and length:
                mask = bytes(buf[pos : pos + 4]) * (length // 4 + 1)
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(mask[:length], "big")).to_bytes(
                    length, "big"
                )
            del buf[:need]
            if opcode == 0x8:  # close: echo it and hang up
                self.transport.write(_frame(0x8, payload[:2]))
                self.transport.close()
                self.transport = None
                return
            self.transport.write(_frame(0xA if opcode == 0x9 else opcode, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


async def serve(host: str, port: int, lifetime: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        # Bounded even if whoever started it never stops it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.lifetime))
    else:
        uvloop.run(serve(args.host, args.port, args.lifetime))


if __name__ == "__main__":
    main()

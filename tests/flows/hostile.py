"""Raw requests with hostile bytes, and what every answer to one must (not) contain.

Shared by the named regression tests (``test_hostile_input.py``) and the fuzzing properties
(``test_fuzz_requests.py``): requests are written as bytes on a socket, so nothing on the client side
encodes, quotes or refuses what the test means to send.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from tests.flows.conftest import Stack


@dataclass(frozen=True)
class Answer:
    status: int
    head: bytes
    body: bytes


def request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                  host: bytes = b"127.0.0.1") -> bytes:
    """One HTTP/1.1 request, connection closed after it; ``Host`` first unless ``headers`` has one."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    if not any(name.lower() == b"host" for name, _ in headers):
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    if body or method == b"POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send(stack: Stack, data: bytes) -> Answer:
    port = int(stack.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0
    return Answer(status, head, body)


def json_body(answer: Answer) -> Any:
    return json.loads(answer.body)


def server_errors(stack: Stack, since: int = 0) -> list[str]:
    """Log lines (from offset ``since``) that tell of a crash: a traceback, an unhandled error."""
    found = []
    for line in stack.logs.getvalue()[since:].splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if (record.get("level") in ("error", "critical") or "exception" in record
                or "Traceback" in line or record.get("event") == "unhandled_error"):
            found.append(line[:300])
    return found


def echoes(value: bytes, answer: Answer, logs: str) -> bool:
    """True when ``value`` shows up in the answer (raw) or in the logs (as decoded by the server)."""
    if value in answer.head or value in answer.body:
        return True
    # aiohttp decodes header bytes as UTF-8 with surrogateescape; JSON logs escape what is not printable.
    text = value.decode("utf-8", "surrogateescape")
    return text in logs or json.dumps(text)[1:-1] in logs

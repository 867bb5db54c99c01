"""The host store: the workers of ``serve --workers N`` share one :class:`MemoryStore`.

The supervisor serves it on a Unix socket in a private directory (mode 0700) from a thread of its
own; each worker's :class:`HostStoreClient` speaks one JSON line per request and per answer. Only
the refresh and callback paths use it (a refresh storm, a callback): the hot path never does.
Without Redis this is what keeps 20 parallel refreshes spread over the workers to one token
request, and a replayed callback refused by every worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import threading
from typing import Any

from sidecar.store.base import StoreUnavailable
from sidecar.store.memory import MemoryStore

# The environment variable that hands the socket path to the workers.
HOST_STORE_ENV = "AUTHSIDECAR_HOST_STORE"
_MAX_LINE = 1 << 20


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _unb64(value: Any) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else None


class HostStoreServer:
    """A MemoryStore on a Unix socket, run by the supervisor in a thread with its own event loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="host-store", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._store = MemoryStore()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_unix_server(self._serve, self.path, limit=_MAX_LINE))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = await self._answer(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    answer = {"error": "bad_request"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        store, op, key = self._store, request["op"], str(request["key"])
        ttl = float(request.get("ttl", 0))
        value = _unb64(request.get("value"))
        if op == "get":
            return {"value": _b64(await store.get(key))}
        if op == "put" and value is not None:
            await store.put(key, value, ttl)
            return {"ok": True}
        if op == "add" and value is not None:
            return {"ok": await store.add(key, value, ttl)}
        if op == "delete":
            await store.delete(key)
            return {"ok": True}
        if op == "renew_if" and value is not None:
            return {"ok": await store.renew_if(key, value, ttl)}
        if op == "delete_if" and value is not None:
            await store.delete_if(key, value)
            return {"ok": True}
        return {"error": "bad_request"}


class HostLease:
    def __init__(self, client: HostStoreClient, key: str, fence: bytes, ttl: float) -> None:
        self._client = client
        self._key = key
        self._fence = fence
        self._ttl = ttl

    async def renew(self) -> bool:
        answer = await self._client._ask({"op": "renew_if", "key": self._key, "value": _b64(self._fence),
                                          "ttl": self._ttl})
        return bool(answer.get("ok"))

    async def release(self) -> None:
        await self._client._ask({"op": "delete_if", "key": self._key, "value": _b64(self._fence)})


class HostStoreClient:
    """A worker's side of the host store: one connection, one request at a time."""

    kind = "host"

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self._path = path
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._exchange(request), self._timeout)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                await self._drop()
                raise StoreUnavailable(type(exc).__name__) from None

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            self._conn = await asyncio.open_unix_connection(self._path, limit=_MAX_LINE)
        reader, writer = self._conn
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("host store closed the connection")
        answer = json.loads(line)
        if not isinstance(answer, dict) or "error" in answer:
            raise ValueError("host store refused the request")
        return answer

    async def _drop(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def get(self, key: str) -> bytes | None:
        return _unb64((await self._ask({"op": "get", "key": key})).get("value"))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._ask({"op": "put", "key": key, "value": _b64(value), "ttl": ttl})

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool((await self._ask({"op": "add", "key": key, "value": _b64(value), "ttl": ttl})).get("ok"))

    async def delete(self, key: str) -> None:
        await self._ask({"op": "delete", "key": key})

    async def lease(self, key: str, ttl: float) -> HostLease | None:
        fence = secrets.token_hex(16).encode()
        if not await self.add(key, fence, ttl):
            return None
        return HostLease(self, key, fence, ttl)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

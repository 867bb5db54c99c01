"""The host store: the workers of ``serve --workers N`` share one :class:`MemoryStore`.

The supervisor serves it on a Unix socket in a private directory (mode 0700) from a thread of its
own; each worker's :class:`HostStoreClient` speaks one JSON line per request and per answer. Only
the refresh, callback and revocation paths use it: the hot path never does. A worker that listens
to a channel opens a second connection, says ``subscribe`` once, and from then on only reads: every
``publish`` on that channel is pushed to it as one ``{"message": ...}`` line.
Without Redis this is what keeps 20 parallel refreshes spread over the workers to one token
request, and a replayed callback refused by every worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

from sidecar.store.base import FencedLease, StoreTimeout, StoreUnavailable, take_lease
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
        # Channel -> the connections subscribed to it (each only reads pushed lines).
        self._subscribers: dict[str, set[asyncio.StreamWriter]] = {}
        self._connections: set[asyncio.Task[None]] = set()

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
            # Open connections end too (a subscriber must see its store go, and reconnect).
            for task in self._connections:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*self._connections, return_exceptions=True))
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    answer = await self._answer(request)
                except (ValueError, KeyError, TypeError):
                    request, answer = None, {"error": "bad_request"}
                writer.write(json.dumps(answer).encode() + b"\n")
                if isinstance(request, dict) and request.get("op") == "subscribe" and "ok" in answer:
                    # After the answer: every push this connection gets comes after its "ok".
                    self._subscribers.setdefault(str(request["key"]), set()).add(writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(task)
            for subscribed in self._subscribers.values():
                subscribed.discard(writer)
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
        member = request.get("member")
        if op == "append" and isinstance(member, str):
            await store.append(key, member, float(request["until"]))
            return {"ok": True}
        if op == "members":
            return {"members": await store.members(key)}
        if op == "publish" and isinstance(member, str):
            self._push(key, member)
            return {"ok": True}
        if op == "subscribe":
            return {"ok": True}
        return {"error": "bad_request"}

    def _push(self, channel: str, message: str) -> None:
        line = json.dumps({"message": message}).encode() + b"\n"
        for writer in list(self._subscribers.get(channel, ())):
            if writer.is_closing():
                self._subscribers[channel].discard(writer)
            else:
                # No drain: one slow subscriber must not hold up the publisher (its buffer grows).
                writer.write(line)


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
            except TimeoutError:
                # The supervisor's store is there but late: what it did with the request is unknown.
                await self._drop()
                raise StoreTimeout("TimeoutError") from None
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
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

    async def lease(self, key: str, ttl: float, fence: bytes | None = None) -> FencedLease | None:
        return await take_lease(self, key, ttl, fence)

    async def renew_if(self, key: str, fence: bytes, ttl: float) -> bool:
        answer = await self._ask({"op": "renew_if", "key": key, "value": _b64(fence), "ttl": ttl})
        return bool(answer.get("ok"))

    async def delete_if(self, key: str, fence: bytes) -> None:
        await self._ask({"op": "delete_if", "key": key, "value": _b64(fence)})

    async def append(self, collection: str, member: str, until: float) -> None:
        await self._ask({"op": "append", "key": collection, "member": member, "until": until})

    async def members(self, collection: str) -> list[str]:
        found = (await self._ask({"op": "members", "key": collection})).get("members")
        return [m for m in found if isinstance(m, str)] if isinstance(found, list) else []

    async def publish(self, channel: str, message: str) -> None:
        await self._ask({"op": "publish", "key": channel, "member": message})

    async def listen(self, channel: str, on_message: Callable[[str], None], *,
                     on_failure: Callable[[str, str], None], on_answer: Callable[[], None],
                     retry: float = 0.2, max_retry: float = 5.0) -> None:
        """Its own connection, subscribed to ``channel``: pushed lines until cancelled."""
        delay = retry
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await asyncio.open_unix_connection(self._path, limit=_MAX_LINE)
                writer.write(json.dumps({"op": "subscribe", "key": channel}).encode() + b"\n")
                await writer.drain()
                if "ok" not in json.loads(await reader.readline() or b"{}"):
                    raise ConnectionResetError("host store refused the subscription")
                on_answer()
                delay = retry
                while line := await reader.readline():
                    pushed = json.loads(line)
                    if isinstance(pushed, dict) and isinstance(pushed.get("message"), str):
                        on_message(pushed["message"])
                raise ConnectionResetError("host store closed the connection")
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                on_failure(type(exc).__name__, "timeout" if isinstance(exc, TimeoutError) else "unavailable")
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

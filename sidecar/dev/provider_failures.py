"""Failure injection for the dev provider: make an endpoint answer 500, garbage, or hang.

Besides failures, a quirk: a mode in which the endpoint answers normally but wrongly, for the checks a
relying party must make on a well-formed answer. ``foreign_id_sub`` (token endpoint only) mints the ID
token of every code exchange and refresh with another user's ``sub`` than its access token's.

A hang waits on an event, never on a timer: it ends when the mode of that endpoint changes or when
the server shuts down (`release_all`, wired to the app's on_shutdown, which aiohttp runs *before*
it waits for in-flight handlers), so closing a test server never waits out aiohttp's shutdown timeout.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Literal, get_args

from aiohttp import web

FailureMode = Literal["ok", "500", "timeout", "garbage", "foreign_id_sub"]
Endpoint = Literal[
    "discovery",
    "jwks",
    "authorize",
    "login",
    "token",
    "revoke",
    "userinfo",
    "logout",
    "end_session",
    "global_sign_out",
]
ENDPOINTS: frozenset[str] = frozenset(get_args(Endpoint))
MODES: frozenset[str] = frozenset(get_args(FailureMode))
# Quirks: modes that alter a normal answer, and the one endpoint each applies to.
QUIRKS: dict[str, str] = {"foreign_id_sub": "token"}

# Looks like JSON to a Content-Type check, parses as nothing.
_GARBAGE = b'{"keys": [ \x00\xff this is not json'


class FailureSwitch:
    def __init__(self) -> None:
        self._modes: dict[str, FailureMode] = {}
        self._wake = asyncio.Event()
        self._shutting_down = False
        # How many requests are hanging right now, per endpoint.
        self.hanging: collections.Counter[str] = collections.Counter()

    def set(self, endpoint: str, mode: FailureMode) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
        if mode not in MODES:
            raise ValueError(f"unknown failure mode {mode!r}; expected one of {sorted(MODES)}")
        if QUIRKS.get(mode, endpoint) != endpoint:
            raise ValueError(f"failure mode {mode!r} only applies to the {QUIRKS[mode]!r} endpoint")
        self._modes[endpoint] = mode
        self._pulse()

    def mode(self, endpoint: str) -> FailureMode:
        return self._modes.get(endpoint, "ok")

    def start(self) -> None:
        """A new server is starting (maybe on a new event loop): hangs are allowed again."""
        self._shutting_down = False
        self._wake = asyncio.Event()

    def release_all(self) -> None:
        self._shutting_down = True
        self._pulse()

    async def wait_hanging(self, endpoint: str, count: int = 1) -> None:
        """Return once `count` requests hang on `endpoint`; lets a test act while they are stuck."""
        while self.hanging[endpoint] < count:
            await self._wait_pulse()

    async def apply(self, endpoint: str) -> web.StreamResponse | None:
        """The failure answer for `endpoint`, or None to let the real handler run (also for a quirk:
        the handler reads the mode and alters its answer)."""
        mode = self.mode(endpoint)
        if mode == "timeout":
            self.hanging[endpoint] += 1
            self._pulse()
            try:
                while self.mode(endpoint) == "timeout" and not self._shutting_down:
                    await self._wait_pulse()
            finally:
                self.hanging[endpoint] -= 1
            if self._shutting_down:
                return web.Response(status=503, text="dev provider is shutting down")
            mode = self.mode(endpoint)
        if mode == "500":
            return web.Response(status=500, text="simulated failure of the dev provider")
        if mode == "garbage":
            return web.Response(status=200, body=_GARBAGE, content_type="application/json")
        return None

    def _pulse(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _wait_pulse(self) -> None:
        await self._wake.wait()

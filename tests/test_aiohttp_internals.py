"""The aiohttp internals authsidecar rests on, pinned in pyproject.toml (``aiohttp>=3.14,<3.15``).

aiohttp offers no public API for two things the sidecar needs: a Cookie-header parser that keeps
every pair as sent (``sidecar.auth.cookies.parse_cookie_header``) and a low-level error answer that
does not quote the request (``sidecar.server.SafeRequestHandler``). Each test here names the private
symbol it guards, so an aiohttp upgrade that changes one fails with that name: check the new
release's code, adapt the module named in the message, then widen the pin.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from aiohttp import web

from sidecar.auth.cookies import parse_cookie_header
from sidecar.server import SafeAppRunner, SafeRequestHandler

COOKIE_PARSER = "aiohttp._cookie_helpers.parse_cookie_header"
HANDLE_ERROR = "aiohttp.web_protocol.RequestHandler.handle_error"
MAKE_SERVER = "aiohttp.web_runner.AppRunner._make_server"
SERVER_CALL = "aiohttp.web_server.Server.__call__ (its _loop and _kwargs)"


def _changed(symbol: str, what: str, module: str) -> str:
    return f"{symbol} changed in aiohttp ({what}): adapt {module}, then widen the aiohttp pin"


def test_the_private_cookie_parser_is_still_there_with_its_signature() -> None:
    module = importlib.import_module("aiohttp._cookie_helpers")
    parser = getattr(module, "parse_cookie_header", None)
    assert parser is not None, _changed(COOKIE_PARSER, "gone", "sidecar/auth/cookies.py")
    params = list(inspect.signature(parser).parameters.values())
    assert [(p.name, p.kind) for p in params] == [("header", inspect.Parameter.POSITIONAL_OR_KEYWORD)], (
        _changed(COOKIE_PARSER, f"signature {inspect.signature(parser)}", "sidecar/auth/cookies.py")
    )


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        pytest.param("", [], id="empty"),
        pytest.param("a=1; b=2", [("a", "1", "1"), ("b", "2", "2")], id="two-pairs"),
        pytest.param("a=1;b=2", [("a", "1", "1"), ("b", "2", "2")], id="no-space"),
        pytest.param("a=1 ; b = 2", [("a", "1", "1"), ("b", "2", "2")], id="spaces-around"),
        pytest.param("a=1; a=2", [("a", "1", "1"), ("a", "2", "2")], id="same-name-twice-in-order"),
        pytest.param('a="x y"; b=2', [("a", "x y", '"x y"'), ("b", "2", "2")], id="quoted-value-as-sent"),
        pytest.param('q="a;b"; s=abc==', [("q", "a;b", '"a;b"'), ("s", "abc==", "abc==")],
                     id="semicolon-inside-quotes"),
        pytest.param("a=1; bad; b=2", [("a", "1", "1"), ("bad", "", ""), ("b", "2", "2")],
                     id="a-bare-name-does-not-stop-the-rest"),
        pytest.param("theme=dark; access_token.0=eyJ; __Host-x=1",
                     [("theme", "dark", "dark"), ("access_token.0", "eyJ", "eyJ"), ("__Host-x", "1", "1")],
                     id="chunk-and-prefixed-names"),
        pytest.param("a=%20z; c=", [("a", "%20z", "%20z"), ("c", "", "")], id="no-percent-decoding"),
    ],
)
def test_the_cookie_parser_keeps_every_pair_as_sent(raw: str, pairs: list[tuple[str, str, str]]) -> None:
    parsed = [(name, morsel.value, morsel.coded_value) for name, morsel in parse_cookie_header(raw)]
    assert parsed == pairs, _changed(COOKIE_PARSER, f"{raw!r} parsed differently", "sidecar/auth/cookies.py")


def test_handle_error_keeps_the_signature_the_safe_handler_overrides() -> None:
    from aiohttp.web_protocol import RequestHandler

    signature = inspect.signature(RequestHandler.handle_error)
    expected = [("self", inspect.Parameter.empty), ("request", inspect.Parameter.empty), ("status", 500),
                ("exc", None), ("message", None)]
    assert [(p.name, p.default) for p in signature.parameters.values()] == expected, (
        _changed(HANDLE_ERROR, f"signature {signature}", "sidecar/server.py")
    )
    assert SafeRequestHandler.handle_error is not RequestHandler.handle_error


def test_the_app_runner_still_makes_its_server_in_make_server() -> None:
    make_server = getattr(web.AppRunner, "_make_server", None)
    assert make_server is not None, _changed(MAKE_SERVER, "gone", "sidecar/server.py")
    assert inspect.iscoroutinefunction(make_server), (
        _changed(MAKE_SERVER, "no longer a coroutine", "sidecar/server.py")
    )
    assert list(inspect.signature(make_server).parameters) == ["self"], (
        _changed(MAKE_SERVER, f"signature {inspect.signature(make_server)}", "sidecar/server.py")
    )


async def test_the_safe_runners_server_builds_safe_request_handlers() -> None:
    runner = SafeAppRunner(web.Application(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None
        try:
            handler = server()
        except AttributeError as exc:  # pragma: no cover - only on an aiohttp that changed
            pytest.fail(_changed(SERVER_CALL, str(exc), "sidecar/server.py"))
        assert isinstance(handler, SafeRequestHandler), _changed(SERVER_CALL, "not used", "sidecar/server.py")
    finally:
        await runner.cleanup()

"""Log lines: the access log's fast path, batching, and redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from sidecar.observability import AccessLog, LineWriter, Logger, flush_logs, make_logger, route_stdlib_logging

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_an_access_line_is_one_json_object_with_the_request_fields() -> None:
    stream = io.StringIO()
    access = AccessLog(make_logger("info", "json", stream), enabled=True)
    access("GET", "proxy", 200, 1.5, 0.7, "sub-1", "rid-1")
    line = json.loads(stream.getvalue())
    assert line == {
        "method": "GET", "route": "proxy", "status": 200, "duration_ms": 1.5, "upstream_ms": 0.7,
        "sub": "sub-1", "request_id": "rid-1", "event": "request", "level": "info", "ts": line["ts"],
    }
    assert line["ts"].endswith("Z")


@pytest.mark.parametrize(
    ("sub", "upstream_ms", "duration_ms"),
    [
        pytest.param("sub-1", 0.7, 1.5, id="plain"),
        pytest.param('a"b\\c\n\u2028é\x00', None, 12.0, id="escapes-and-unicode"),
        pytest.param(None, 1e-05, 123456.789, id="no-sub-tiny-and-large-numbers"),
    ],
)
def test_an_access_line_is_exactly_what_json_dumps_makes_of_its_fields(
    sub: str | None, upstream_ms: float | None, duration_ms: float
) -> None:
    stream = io.StringIO()
    AccessLog(make_logger("info", "json", stream), enabled=True)(
        "PATCH", "proxy", 503, duration_ms, upstream_ms, sub, "rid:1"
    )
    line = stream.getvalue().rstrip("\n")
    fields = json.loads(line)
    assert line == json.dumps({
        "method": "PATCH", "route": "proxy", "status": 503, "duration_ms": duration_ms,
        "upstream_ms": upstream_ms, "sub": sub, "request_id": "rid:1", "event": "request", "level": "info",
        "ts": fields["ts"],
    })


@pytest.mark.parametrize(
    ("method", "request_id"),
    [pytest.param(TOKEN, "rid", id="token-as-method"), pytest.param("GET", TOKEN, id="token-as-request-id")],
)
def test_a_token_smuggled_into_an_access_field_is_masked(method: str, request_id: str) -> None:
    stream = io.StringIO()
    AccessLog(make_logger("info", "json", stream), enabled=True)(method, "proxy", 401, 1.0, None, None,
                                                                 request_id)
    assert TOKEN not in stream.getvalue()
    assert "[redacted-jwt]" in stream.getvalue()


@pytest.mark.parametrize(
    ("level", "enabled", "written"),
    [pytest.param("info", True, True, id="on"), pytest.param("info", False, False, id="switched-off"),
     pytest.param("warning", True, False, id="level-above-info")],
)
def test_the_access_log_follows_its_switch_and_the_level(level: str, enabled: bool, written: bool) -> None:
    stream = io.StringIO()
    AccessLog(make_logger(level, "json", stream), enabled=enabled)("GET", "proxy", 200, 1.0, None, None, "r")
    assert bool(stream.getvalue()) is written


def test_the_console_format_goes_through_structlog() -> None:
    stream = io.StringIO()
    AccessLog(make_logger("info", "console", stream), enabled=True)("GET", "proxy", 200, 1.0, None, None, "r")
    assert "request" in stream.getvalue()
    assert not stream.getvalue().startswith("{")


async def test_batched_lines_go_out_together_after_a_short_delay() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream, batched=True, delay=0.01)
    writer.write("one")
    writer.write("two")
    assert stream.getvalue() == ""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_later(0.02, done.set_result, None)  # after the writer's own timer
    await done
    assert stream.getvalue() == "one\ntwo\n"


async def test_flush_logs_sends_what_a_batched_logger_holds() -> None:
    stream = io.StringIO()
    log = make_logger("info", "json", stream, batched=True)
    log.info("stopped", secret_value="s3cr3t")
    assert stream.getvalue() == ""
    flush_logs(log)
    line = json.loads(stream.getvalue())
    assert line["event"] == "stopped"
    assert line["secret_value"] == "[redacted]"


def test_without_a_running_loop_a_batched_line_is_written_at_once() -> None:
    stream = io.StringIO()
    LineWriter(stream, batched=True).write("early")
    assert stream.getvalue() == "early\n"


# -- the standard library's lines in the same stream ------------------------------------------------


@pytest.fixture
def library() -> logging.Logger:
    """A standard-library logger like aiohttp's or aiohttp-session's."""
    return logging.getLogger("tests.library")


def routed(level: str = "info", fmt: str = "json", *, batched: bool = False) -> tuple[io.StringIO, Logger]:
    stream = io.StringIO()
    return stream, make_logger(level, fmt, stream, batched=batched)


Route = Callable[[Logger], None]


@pytest.fixture
def route() -> Iterator[Route]:
    """``route(log)``: stdlib logging goes through ``log`` until the test ends."""
    undo: list[Callable[[], None]] = []
    yield lambda log: undo.append(route_stdlib_logging(log))
    for step in undo:
        step()


def test_a_library_warning_is_one_json_line_with_event_level_logger_and_fields(
    library: logging.Logger, route: Route
) -> None:
    stream, log = routed()
    route(log)
    library.warning("Cannot decrypt cookie value, %s", "create a new fresh session", extra={"status": 400})
    line = json.loads(stream.getvalue())
    assert line == {"event": "Cannot decrypt cookie value, create a new fresh session", "status": 400,
                    "logger": "tests.library", "level": "warning", "ts": line["ts"]}


@pytest.mark.parametrize(
    ("message", "extra", "hidden"),
    [
        pytest.param("bad header %s", {}, TOKEN, id="token-in-the-message"),
        pytest.param("refused", {"cookie": "s3cr3t-cookie-bytes"}, "s3cr3t-cookie-bytes", id="cookie-field"),
        pytest.param("refused", {"authorization": f"Bearer {TOKEN}"}, TOKEN, id="authorization-field"),
    ],
)
def test_library_lines_go_through_the_redacting_processor(
    library: logging.Logger, route: Route, message: str, extra: dict[str, str], hidden: str
) -> None:
    stream, log = routed()
    route(log)
    library.warning(message, *((TOKEN,) if "%s" in message else ()), extra=extra)
    assert hidden not in stream.getvalue()
    json.loads(stream.getvalue())


def test_a_library_traceback_is_a_field_of_the_json_line(library: logging.Logger, route: Route) -> None:
    stream, log = routed()
    route(log)
    try:
        raise ValueError("boom")
    except ValueError:
        library.exception("Error handling request")
    line = json.loads(stream.getvalue())
    assert (line["event"], line["level"]) == ("Error handling request", "error")
    assert "ValueError: boom" in line["exception"]


def test_aiohttps_access_log_never_joins_the_stream(route: Route) -> None:
    # It prints request lines with their query: the callback's code, the authorize URL's state.
    stream, log = routed()
    route(log)
    logging.getLogger("aiohttp.access").warning('"GET /auth/callback?code=secret-code HTTP/1.1" 302')
    assert stream.getvalue() == ""


def test_the_configured_level_applies_to_library_lines(library: logging.Logger, route: Route) -> None:
    stream, log = routed("error")
    route(log)
    library.warning("below the level")
    library.error("at the level")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["at the level"]


def test_once_unrouted_library_lines_leave_the_stream_alone(library: logging.Logger) -> None:
    stream, log = routed()
    undo = route_stdlib_logging(log)
    undo()
    library.warning("after")
    assert stream.getvalue() == ""


async def test_library_lines_are_batched_with_the_others(library: logging.Logger, route: Route) -> None:
    stream, log = routed(batched=True)
    route(log)
    log.info("first")
    library.warning("second")
    assert stream.getvalue() == ""
    flush_logs(log)
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["first", "second"]

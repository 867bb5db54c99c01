"""The injector's listeners: admin routes, metrics by outcome, the certificate reloaded from
changed files, and no 500 even when the review itself fails."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from ._support import annotated, app_pod, review
from .conftest import Running


async def served_serial(running: Running) -> str:
    """The serial number of the certificate a new TLS connection is handed."""
    _, writer = await asyncio.open_connection("127.0.0.1", running.injector.port,
                                              ssl=running.certs.trusting())
    serial = writer.get_extra_info("peercert")["serialNumber"]
    writer.close()
    await writer.wait_closed()
    return str(serial)


async def mutate(client: aiohttp.ClientSession, running: Running, doc: Any) -> dict[str, Any]:
    async with client.post(running.url, data=json.dumps(doc), ssl=running.certs.trusting()) as resp:
        assert resp.status in (200, 400)
        body: dict[str, Any] = await resp.json()
        return body


async def test_admin_port_answers_health_readiness_and_metrics(
    running: Running, client: aiohttp.ClientSession
) -> None:
    async with client.get(running.admin + "/healthz") as resp:
        assert resp.status == 200
    async with client.get(running.admin + "/readyz") as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"status": "ready"}
    async with client.get(running.admin + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "authsidecar_injector_certificate_expiry_timestamp_seconds" in text


async def test_readiness_fails_once_stopping(start_injector: Any, client: aiohttp.ClientSession) -> None:
    running = await start_injector()
    running.injector.closing = True
    async with client.get(running.admin + "/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "shutting_down"


async def test_metrics_count_reviews_by_outcome(running: Running, client: aiohttp.ClientSession) -> None:
    await mutate(client, running, review(app_pod(annotated())))
    await mutate(client, running, review(app_pod(annotated())))
    await mutate(client, running, review(app_pod()))
    await mutate(client, running, review(app_pod(annotated("http"))))
    await mutate(client, running, {"no": "uid"})
    async with client.get(running.admin + "/metrics") as resp:
        text = await resp.text()
    counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("authsidecar_injector_admission_reviews_total{")}
    assert counts == {'outcome="injected"': 2, 'outcome="skipped"': 1, 'outcome="refused"': 1,
                      'outcome="invalid"': 1}


async def test_every_review_is_logged_with_its_uid_and_outcome(
    running: Running, client: aiohttp.ClientSession
) -> None:
    doc = review(app_pod(annotated("0")), uid="uid-for-the-log")
    await mutate(client, running, doc)
    (line,) = [e for e in running.log if e["event"] == "admission_review"]
    assert line["uid"] == "uid-for-the-log"
    assert line["outcome"] == "refused"
    assert line["pod"] == "web-1"
    assert line["namespace"] == "shop"
    assert "authsidecar.io/upstream-port" in line["detail"]


async def test_a_review_that_fails_inside_is_refused_with_the_uid_never_a_500(
    running: Running, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_raw: bytes, _template: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("sidecar.inject.server.review", broken)
    body = await mutate(client, running, review(app_pod(annotated()), uid="uid-7"))
    assert body["response"]["uid"] == "uid-7"
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 500
    assert [e["event"] for e in running.log if e["level"] == "exception"] == ["admission_review_failed"]


async def test_new_certificate_files_serve_without_a_restart(running: Running) -> None:
    before = await served_serial(running)
    running.certs.issue("127.0.0.1")
    assert await served_serial(running) == before  # not before the files are checked

    assert running.injector.tls.check() == "ok"
    assert await served_serial(running) != before
    assert running.injector.tls.check() is None  # unchanged files: nothing to do


async def test_the_timer_picks_up_renewed_files(start_injector: Any, client: aiohttp.ClientSession) -> None:
    running = await start_injector(listen={"cert_reload_interval": 0.01})
    before = await served_serial(running)
    renewed = asyncio.create_task(running.injector.tls.changed())
    running.certs.issue("127.0.0.1")
    await asyncio.wait_for(renewed, timeout=10)

    assert await served_serial(running) != before
    async with client.get(running.admin + "/metrics") as resp:
        assert 'authsidecar_injector_certificate_reloads_total{result="ok"} 1.0' in await resp.text()


@pytest.mark.parametrize("written", ["cert", "key"], ids=["new-cert-old-key", "old-cert-new-key"])
async def test_half_a_renewal_leaves_the_old_certificate_serving(running: Running, written: str) -> None:
    before = await served_serial(running)
    other = running.certs.ca.issue_cert("127.0.0.1")
    if written == "cert":
        other.cert_chain_pems[0].write_to_path(str(running.certs.cert))
    else:
        other.private_key_pem.write_to_path(str(running.certs.key))
    assert running.injector.tls.check() == "failed"
    assert await served_serial(running) == before


async def test_unreadable_new_files_leave_the_old_certificate_serving(running: Running) -> None:
    before = await served_serial(running)
    running.certs.cert.write_text("not a certificate", encoding="utf-8")
    assert running.injector.tls.check() == "failed"
    assert await served_serial(running) == before

"""Bad input at /mutate: each a 400/413 or an AdmissionReview refusing with a reason, never a
500, and the request's uid echoed whenever it has one."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest

from ._support import annotated, app_pod, apply, review
from .conftest import Running

UID = "2f5c3e1a-0b6d-4c1e-9a8f-111111111111"


def with_(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``doc`` with the dotted ``path`` set to ``value`` (a value of ... removes it)."""
    out = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


GOOD = review(app_pod(annotated()), uid=UID)


async def post(client: aiohttp.ClientSession, running: Running, data: bytes) -> tuple[int, dict[str, Any]]:
    # A file-like body: aiohttp warns about sending megabytes of raw bytes in one write.
    async with client.post(running.url, data=io.BytesIO(data), ssl=running.certs.trusting(),
                           headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


NO_UID = [
    ("not-json", b"{not json", "not_json"),
    ("empty-body", b"", "not_json"),
    ("not-utf8", b"\xff\xfe\xfa", "not_json"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, "not_json"),
    ("a-json-list", b"[1, 2]", "no_uid"),
    ("no-request", json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "no_uid"),
    ("missing-uid", json.dumps(with_(GOOD, "request.uid", ...)).encode(), "no_uid"),
    ("empty-uid", json.dumps(with_(GOOD, "request.uid", "")).encode(), "no_uid"),
    ("uid-not-a-string", json.dumps(with_(GOOD, "request.uid", 42)).encode(), "no_uid"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in NO_UID], ids=[i for i, _, _ in NO_UID])
async def test_a_body_without_a_uid_to_echo_is_a_400_naming_the_problem(
    running: Running, client: aiohttp.ClientSession, data: bytes, reason: str
) -> None:
    status, body = await post(client, running, data)
    assert status == 400
    assert body["error"] == "bad_request"
    assert body["reason"] == reason


REFUSED = [
    ("wrong-api-version", with_(GOOD, "apiVersion", "admission.k8s.io/v1beta1"), 400, "apiVersion"),
    ("wrong-kind", with_(GOOD, "kind", "TokenReview"), 400, "apiVersion, kind"),
    ("not-a-pod", with_(GOOD, "request.kind", {"group": "apps", "version": "v1", "kind": "Deployment"}),
     400, "request.kind: only core v1 Pods"),
    ("object-missing", with_(GOOD, "request.object", ...), 400, "request.object"),
    ("object-not-an-object", with_(GOOD, "request.object", "pod"), 400, "request.object"),
    ("object-of-another-kind", with_(GOOD, "request.object.kind", "Service"), 400, "request.object"),
    ("spec-not-an-object", with_(GOOD, "request.object.spec", []), 422, "spec: must be an object"),
    ("containers-not-a-list", with_(GOOD, "request.object.spec.containers", "app"), 422, "spec.containers"),
    ("inject-yes", review(app_pod(annotated() | {"authsidecar.io/inject": "yes"}), uid=UID), 422,
     'authsidecar.io/inject: must be "true" or "false"'),
    ("no-upstream-port", review(app_pod({"authsidecar.io/inject": "true"}), uid=UID), 422,
     "authsidecar.io/upstream-port: required"),
    ("port-not-a-number", review(app_pod(annotated("http")), uid=UID), 422,
     "authsidecar.io/upstream-port: must be a port number"),
    ("port-zero", review(app_pod(annotated("0")), uid=UID), 422, "authsidecar.io/upstream-port"),
    ("port-too-big", review(app_pod(annotated("65536")), uid=UID), 422, "authsidecar.io/upstream-port"),
    ("port-negative", review(app_pod(annotated("-1")), uid=UID), 422, "authsidecar.io/upstream-port"),
    ("port-unicode-digits", review(app_pod(annotated("\uff13\uff10\uff10\uff10")), uid=UID), 422,
     "authsidecar.io/upstream-port"),
    ("port-is-the-sidecars", review(app_pod(annotated("8080")), uid=UID), 422,
     "authsidecar.io/upstream-port: 8080 is the sidecar's own port"),
    ("config-not-a-name", review(app_pod(annotated(**{"authsidecar.io/config": "My_Config"})), uid=UID),
     422, "authsidecar.io/config"),
    ("secret-not-a-name", review(app_pod(annotated(**{"authsidecar.io/secret": "../etc"})), uid=UID),
     422, "authsidecar.io/secret"),
    ("unknown-annotation", review(app_pod(annotated(**{"authsidecar.io/upstream_port": "3000"})), uid=UID),
     422, "authsidecar.io/upstream_port: unknown annotation"),
    ("app-uses-the-sidecars-port",
     review(app_pod(annotated(), containers=[{"name": "app", "image": "app:1",
                                               "ports": [{"containerPort": 9464}]}]), uid=UID),
     422, "spec.containers[app].ports: 9464 is the sidecar's admin port"),
    ("host-network", review(app_pod(annotated(), hostNetwork=True), uid=UID), 422, "spec.hostNetwork"),
]


@pytest.mark.parametrize(("doc", "code", "message"), [(d, c, m) for _, d, c, m in REFUSED],
                         ids=[i for i, *_ in REFUSED])
async def test_a_bad_review_or_pod_is_refused_echoing_the_uid_with_a_message_naming_the_problem(
    running: Running, client: aiohttp.ClientSession, doc: dict[str, Any], code: int, message: str
) -> None:
    status, body = await post(client, running, json.dumps(doc).encode())
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == UID
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"]["code"] == code
    assert message in response["status"]["message"]


async def test_a_10_mb_body_is_refused_with_413_before_it_is_read(
    running: Running, client: aiohttp.ClientSession
) -> None:
    big = json.dumps(with_(GOOD, "request.object.metadata.labels", {"x": "y" * 10_000_000})).encode()
    status, body = await post(client, running, big)
    assert status == 413
    assert body["reason"] == "too_large"


async def test_a_10_mb_chunked_body_without_a_length_is_refused_with_413(
    running: Running, client: aiohttp.ClientSession
) -> None:
    async def chunks() -> Any:
        yield b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "x": "'
        for _ in range(160):
            yield b"y" * 65536
        yield b'"}'

    async with client.post(running.url, data=chunks(), ssl=running.certs.trusting()) as resp:
        assert resp.status == 413
        assert (await resp.json())["reason"] == "too_large"


async def test_other_methods_and_paths_are_not_a_500(running: Running, client: aiohttp.ClientSession) -> None:
    ssl = running.certs.trusting()
    async with client.get(running.url, ssl=ssl) as resp:
        assert resp.status == 405
    async with client.post(running.url.replace("/mutate", "/other"), data=b"{}", ssl=ssl) as resp:
        assert resp.status == 404


SKIPPED = [
    ("no-annotations", app_pod()),
    ("inject-false", app_pod({"authsidecar.io/inject": "false"})),
    ("other-annotations-only", app_pod({"example.com/owner": "team-a"})),
]


@pytest.mark.parametrize("pod", [p for _, p in SKIPPED], ids=[i for i, _ in SKIPPED])
async def test_a_pod_that_does_not_ask_is_allowed_unchanged(
    running: Running, client: aiohttp.ClientSession, pod: dict[str, Any]
) -> None:
    status, body = await post(client, running, json.dumps(review(pod, uid=UID)).encode())
    assert status == 200
    assert body["response"] == {"uid": UID, "allowed": True}


@pytest.mark.parametrize(("operation", "sub"), [("UPDATE", ""), ("DELETE", ""), ("CREATE", "binding")],
                         ids=["update", "delete", "subresource"])
async def test_only_the_creation_of_a_pod_is_mutated(
    running: Running, client: aiohttp.ClientSession, operation: str, sub: str
) -> None:
    doc = review(app_pod(annotated()), uid=UID, operation=operation, subResource=sub)
    status, body = await post(client, running, json.dumps(doc).encode())
    assert status == 200
    assert body["response"] == {"uid": UID, "allowed": True}


async def test_an_already_injected_pod_gets_no_second_patch(
    running: Running, client: aiohttp.ClientSession
) -> None:
    pod = app_pod(annotated())
    _, first = await post(client, running, json.dumps(review(pod)).encode())
    injected = apply(pod, first["response"])
    status, again = await post(client, running, json.dumps(review(injected, uid=UID)).encode())
    assert status == 200
    assert again["response"] == {"uid": UID, "allowed": True}


async def test_a_dry_run_gets_the_same_patch_as_a_real_create(
    running: Running, client: aiohttp.ClientSession
) -> None:
    pod = app_pod(annotated())
    _, real = await post(client, running, json.dumps(review(pod, uid=UID)).encode())
    _, dry = await post(client, running, json.dumps(review(pod, uid=UID, dry_run=True)).encode())
    assert dry["response"]["allowed"] is True
    assert dry["response"]["patch"] == real["response"]["patch"]

"""The running webhook over real TLS: AdmissionReviews of real pods in, patches that Kubernetes
accepts and a sidecar configuration that authsidecar accepts out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version, major_minor

from tests.deploy._support import K8S

from ._support import (
    DEPLOY_CONFIG_TEXT,
    SECRETS,
    annotated,
    app_pod,
    apply,
    deploy_pod,
    injected_container,
    review,
    simulate_mounts,
)
from .conftest import Running

LATEST = major_minor(latest_version())


async def post(client: aiohttp.ClientSession, running: Running, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post(running.url, data=data, ssl=running.certs.trusting(),
                           headers={"Content-Type": "application/json"}) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_the_webhook_serves_only_over_tls_with_its_certificate(
    running: Running, client: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await client.post(running.url, json=review(app_pod()))
    with pytest.raises(aiohttp.ClientError):
        await client.post(running.url.replace("https://", "http://"), json=review(app_pod()))


@pytest.mark.parametrize(("native", "versions"), [(True, ["1.29", LATEST]), (False, ["1.27", LATEST])],
                         ids=["native-sidecar", "classic-container"])
async def test_this_repositorys_deployment_pod_injected_is_a_valid_kubernetes_pod(
    start_injector: Any, client: aiohttp.ClientSession, native: bool, versions: list[str]
) -> None:
    running = await start_injector(sidecar={"native_sidecar": native})
    pod = deploy_pod()
    request = review(pod)
    status, body = await post(client, running, request)

    assert status == 200
    response = body["response"]
    assert response["uid"] == request["request"]["uid"]
    assert response["allowed"] is True
    patched = apply(pod, response)
    for version in versions:
        kubernetes_validate.validate(patched, version, strict=True)
    sidecar = injected_container(patched)
    where = patched["spec"]["initContainers" if native else "containers"]
    assert sidecar in where
    assert (sidecar.get("restartPolicy") == "Always") is native
    # The app is untouched, and its own annotations are kept beside the injector's mark.
    assert patched["spec"]["containers"][0] == pod["spec"]["containers"][0]
    annotations = patched["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9464"
    assert annotations["authsidecar.io/injected"] == "true"


async def test_the_injected_sidecars_configuration_is_accepted_by_check_config(
    running: Running, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pod = deploy_pod()
    _, body = await post(client, running, review(pod))
    patched = apply(pod, body["response"])
    env = simulate_mounts(patched, tmp_path, {"authsidecar-config": {"authsidecar.yaml": DEPLOY_CONFIG_TEXT}},
                          {"authsidecar-secrets": SECRETS})
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSIDECAR_")}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config"], env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    sidecar = injected_container(patched)
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert effective["upstream"]["url"] == "http://127.0.0.1:3000"
    assert effective["listen"]["port"] == ports["authsidecar"]
    assert effective["admin"]["port"] == ports["authsidecar-adm"]
    # The secrets came from the mounted files (and are masked in the output).
    assert effective["cookies"]["secret"] == effective["oidc"]["client_secret"] == "**********"
    assert SECRETS["cookie-secret"] not in result.stdout


async def test_a_service_targeting_the_named_port_reaches_the_sidecar_not_the_app(
    running: Running, client: aiohttp.ClientSession
) -> None:
    pod = app_pod(annotated("3000"), )
    pod["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 3000}]
    _, body = await post(client, running, review(pod))
    patched = apply(pod, body["response"])
    named = {p["name"]: p["containerPort"] for c in patched["spec"]["containers"]
             + patched["spec"].get("initContainers", []) for p in c.get("ports", [])}
    assert named["authsidecar"] == 8080
    assert named["http"] == 3000
    env = {e["name"]: e["value"] for e in injected_container(patched)["env"]}
    assert env["AUTHSIDECAR_UPSTREAM__URL"] == "http://127.0.0.1:3000"


def test_kubernetes_validate_refuses_a_broken_injected_pod() -> None:
    # The check above is not vacuous: a misspelt field is refused.
    pod = app_pod()
    pod["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, LATEST, strict=True)


__all__ = ["K8S"]

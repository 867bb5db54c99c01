"""The pure planner: JSON Patch paths for pods with and without the arrays it extends, pointer
escaping, the two sidecar forms, and the names a pod chooses."""

from __future__ import annotations

from typing import Any

import jsonpatch
import pytest

from sidecar.inject import container as c
from sidecar.inject.patch import plan, pointer
from sidecar.inject.settings import SidecarTemplate

from ._support import IMAGE, annotated, app_pod

NATIVE = SidecarTemplate(image=IMAGE)
CLASSIC = SidecarTemplate(image=IMAGE, native_sidecar=False)


def injected(pod: dict[str, Any], template: SidecarTemplate = NATIVE) -> dict[str, Any]:
    result = plan(pod, template)
    assert result.problems == ()
    out = jsonpatch.JsonPatch(list(result.ops)).apply(pod)
    assert isinstance(out, dict)
    return out


@pytest.mark.parametrize(("parts", "expected"), [
    (("metadata", "annotations", "authsidecar.io/injected"),
     "/metadata/annotations/authsidecar.io~1injected"),
    (("a~b", "c/d~1"), "/a~0b/c~1d~01"),
    (("spec", "volumes", "-"), "/spec/volumes/-"),
], ids=["slash", "tilde-before-slash", "append"])
def test_pointer_escapes_tilde_then_slash(parts: tuple[str, ...], expected: str) -> None:
    assert pointer(*parts) == expected


POD_SHAPES = {
    "bare": {},
    "with-volumes-and-init": {"volumes": [{"name": "data", "emptyDir": {}}],
                              "initContainers": [{"name": "migrate", "image": "app:1"}]},
    "empty-arrays": {"volumes": [], "initContainers": []},
}


@pytest.mark.parametrize("shape", POD_SHAPES.values(), ids=POD_SHAPES.keys())
@pytest.mark.parametrize("template", [NATIVE, CLASSIC], ids=["native", "classic"])
def test_the_patch_applies_whether_or_not_the_pod_has_the_arrays_it_extends(
    shape: dict[str, Any], template: SidecarTemplate
) -> None:
    pod = app_pod(annotated(), **shape)
    out = injected(pod, template)
    spec = out["spec"]
    # What the pod had stays, in order, before what was added.
    assert spec["volumes"][: len(shape.get("volumes", []))] == shape.get("volumes", [])
    assert [v["name"] for v in spec["volumes"]][len(shape.get("volumes", [])):] == list(c.VOLUMES)
    inits = spec.get("initContainers", [])
    assert inits[: len(shape.get("initContainers", []))] == shape.get("initContainers", [])
    where = inits if template.native_sidecar else spec["containers"]
    assert where[-1]["name"] == c.NAME
    assert out["metadata"]["annotations"]["authsidecar.io/injected"] == "true"


@pytest.mark.parametrize("metadata", [None, {}, {"name": "p"}],
                         ids=["no-metadata", "empty", "no-annotations"])
def test_a_pod_without_metadata_or_annotations_is_left_alone(metadata: dict[str, Any] | None) -> None:
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "spec": {"containers": [{"name": "app", "image": "a:1"}]}}
    if metadata is not None:
        pod["metadata"] = metadata
    assert plan(pod, NATIVE).ops == ()
    assert plan(pod, NATIVE).skipped == "not_annotated"


def test_the_native_form_starts_first_and_needs_no_pre_stop_pause() -> None:
    sidecar = injected(app_pod(annotated()))["spec"]["initContainers"][-1]
    assert sidecar["restartPolicy"] == "Always"
    assert "lifecycle" not in sidecar
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": c.ADMIN_PORT_NAME}


def test_the_classic_form_pauses_before_stopping_like_deploy_k8s() -> None:
    sidecar = injected(app_pod(annotated()), CLASSIC)["spec"]["containers"][-1]
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_the_pod_chooses_its_configmap_and_secret_by_annotation() -> None:
    names = {"authsidecar.io/config": "shop-auth", "authsidecar.io/secret": "shop-oidc"}
    pod = app_pod(annotated("9000", **names))
    out = injected(pod)
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes[c.CONFIG_VOLUME]["configMap"] == {"name": "shop-auth"}
    assert volumes[c.SECRET_VOLUME]["secret"] == {"secretName": "shop-oidc", "defaultMode": 0o444}
    env = {e["name"]: e["value"] for e in out["spec"]["initContainers"][-1]["env"]}
    assert env["AUTHSIDECAR_UPSTREAM__URL"] == "http://127.0.0.1:9000"
    assert env["AUTHSIDECAR_OIDC__CLIENT_SECRET_FILE"] == "/var/run/secrets/authsidecar/client-secret"
    assert env["AUTHSIDECAR_COOKIES__SECRET_FILE"] == "/var/run/secrets/authsidecar/cookie-secret"
    assert env["AUTHSIDECAR_CONFIG"] == "/etc/authsidecar/authsidecar.yaml"


def test_without_a_secret_nothing_is_mounted_or_pointed_at() -> None:
    out = injected(app_pod(annotated()), SidecarTemplate(image=IMAGE, secret=None))
    sidecar = out["spec"]["initContainers"][-1]
    assert c.SECRET_VOLUME not in {v["name"] for v in out["spec"]["volumes"]}
    assert not [e for e in sidecar["env"] if e["name"].endswith("_FILE")]


def test_the_sidecar_is_locked_down_and_read_only_where_it_reads() -> None:
    sidecar = injected(app_pod(annotated()))["spec"]["initContainers"][-1]
    assert sidecar["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 10001, "runAsGroup": 10001, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[c.CONFIG_VOLUME]["readOnly"] is True
    assert mounts[c.SECRET_VOLUME]["readOnly"] is True
    assert sidecar["image"] == IMAGE


CLASHES = [
    ("container-named-authsidecar", {"containers": [{"name": "app", "image": "a:1"},
                                                     {"name": "authsidecar", "image": "x:1"}]},
     "spec.containers[authsidecar]: a container named authsidecar exists already"),
    ("init-container-uses-8080", {"initContainers": [{"name": "warm", "image": "a:1",
                                                       "ports": [{"containerPort": 8080}]}]},
     "spec.initContainers[warm].ports: 8080 is the sidecar's listen port"),
    ("port-name-taken", {"containers": [{"name": "app", "image": "a:1",
                                         "ports": [{"name": "authsidecar", "containerPort": 3000}]}]},
     "spec.containers[app].ports: the name authsidecar is the sidecar's"),
    ("volume-name-taken", {"volumes": [{"name": "authsidecar-tmp", "emptyDir": {}}]},
     "spec.volumes[authsidecar-tmp]: the sidecar's volume name is taken"),
    ("host-network", {"hostNetwork": True}, "spec.hostNetwork"),
    ("ports-not-a-list", {"containers": [{"name": "app", "image": "a:1", "ports": 8080}]}, None),
]


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in CLASHES], ids=[i for i, *_ in CLASHES])
def test_what_would_collide_with_the_sidecar_refuses_the_pod(
    spec: dict[str, Any], message: str | None
) -> None:
    result = plan(app_pod(annotated(), **spec), NATIVE)
    if message is None:  # nothing to collide with, and no crash on the odd shape
        assert result.problems == ()
    else:
        assert result.ops == ()
        assert any(message in p for p in result.problems), result.problems


def test_every_problem_is_reported_at_once() -> None:
    pod = app_pod({"authsidecar.io/inject": "true", "authsidecar.io/config": "Bad_Name"}, hostNetwork=True)
    problems = plan(pod, NATIVE).problems
    assert [p.split(":")[0] for p in problems] == [
        "authsidecar.io/upstream-port", "authsidecar.io/config", "spec.hostNetwork"]

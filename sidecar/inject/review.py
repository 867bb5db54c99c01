"""AdmissionReview ``admission.k8s.io/v1`` in (bytes), the response out (a JSON object).

Every answer to a review that carries a ``request.uid`` is an AdmissionReview echoing that uid
(the API server matches answers by it); a body with no uid to echo (not JSON, no ``request``, no
uid) gets 400 and a JSON error. Nothing here raises on bad input.

A dry-run request (``request.dryRun: true``) gets the same patch as a real one: the mutation has
no side effects (the webhook declares ``sideEffects: None``), so the dry run shows exactly what a
real create would store.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from sidecar.inject.patch import plan
from sidecar.inject.settings import SidecarTemplate

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
POD = {"group": "", "version": "v1", "kind": "Pod"}


@dataclass(frozen=True)
class Verdict:
    """An HTTP status and JSON body, plus what the log line and the metric say about it."""

    status: int
    body: dict[str, Any]
    # injected | skipped | refused | invalid | error: the metric's label.
    outcome: str
    uid: str | None = None
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def uid_of(doc: Any) -> str | None:
    request = doc.get("request") if isinstance(doc, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and uid else None


def bad_request(reason: str, message: str, outcome: str = "invalid") -> Verdict:
    return Verdict(400, {"error": "bad_request", "reason": reason, "message": message}, outcome,
                   message=message)


def answer(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": uid, **response}}


def refuse(uid: str, message: str, *, code: int, outcome: str = "refused", **fields: Any) -> Verdict:
    body = answer(uid, {"allowed": False, "status": {"code": code, "message": message}})
    return Verdict(200, body, outcome, uid, message, fields)


def review(raw: bytes, template: SidecarTemplate) -> Verdict:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return bad_request("not_json", "body: not a JSON document")
    uid = uid_of(doc)
    if uid is None:
        return bad_request("no_uid", "request.uid: required (an AdmissionReview request's non-empty uid)")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        got = f"{doc.get('apiVersion')!s:.40} {doc.get('kind')!s:.40}"
        return refuse(uid, f"apiVersion, kind: expected {API_VERSION} {KIND}, got {got}",
                      code=400, outcome="invalid")
    request: dict[str, Any] = doc["request"]
    where: dict[str, Any] = {"namespace": _short(request.get("namespace")),
                             "dry_run": request.get("dryRun") is True}
    kind = request.get("kind")
    if kind != POD:
        shown = kind if isinstance(kind, dict) else {}
        got = "/".join(str(shown.get(k, ""))[:40] for k in ("group", "version", "kind"))
        return refuse(uid, f"request.kind: only core v1 Pods are injected, got {got}",
                      code=400, outcome="invalid", **where)
    if request.get("subResource") or request.get("operation") != "CREATE":
        # Only a pod's creation is mutated; the webhook's rules send nothing else.
        return Verdict(200, answer(uid, {"allowed": True}), "skipped", uid, "not_a_pod_create", where)
    pod = request.get("object")
    if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod" or pod.get("apiVersion", "v1") != "v1":
        return refuse(uid, "request.object: must be a v1 Pod", code=400, outcome="invalid", **where)
    metadata = pod["metadata"] if isinstance(pod.get("metadata"), dict) else {}
    where["pod"] = _short(request.get("name") or metadata.get("name") or metadata.get("generateName"))
    result = plan(pod, template)
    if result.problems:
        return refuse(uid, "authsidecar: " + "; ".join(result.problems), code=422, **where)
    if not result.ops:
        return Verdict(200, answer(uid, {"allowed": True}), "skipped", uid, result.skipped, where)
    patch = base64.b64encode(json.dumps(list(result.ops), separators=(",", ":")).encode()).decode()
    body = answer(uid, {"allowed": True, "patchType": "JSONPatch", "patch": patch})
    return Verdict(200, body, "injected", uid, "injected", where)


def failed(raw: bytes) -> Verdict:
    """The answer when reviewing raised (a bug): refused, with the uid when it can be read."""
    try:
        uid = uid_of(json.loads(raw))
    except (ValueError, RecursionError):
        uid = None
    if uid is None:
        return bad_request("internal", "the review failed", outcome="error")
    return refuse(uid, "authsidecar: the injector failed to review this pod", code=500, outcome="error")


def _short(value: Any) -> str | None:
    return value[:253] if isinstance(value, str) else None

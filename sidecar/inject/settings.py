"""The injector's configuration: one YAML file (``authsidecar inject --config FILE``).

Closed and frozen like the sidecar's own settings: unknown keys are refused, every problem is
reported at once as one line naming its dotted key (:class:`~sidecar.errors.ConfigError`).
The ``sidecar`` section is the template of every injected container: image, ports, resources,
and the names a pod gets when it does not name its own ConfigMap or Secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecar.config_load import read_yaml_mapping
from sidecar.errors import ConfigError

# Kubernetes object names (DNS-1123 subdomain) and resource quantities ("50m", "256Mi", "1").
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
CONFIG_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class WebhookListen(_Section):
    host: str = "0.0.0.0"  # noqa: S104 - the API server reaches the webhook through its Service
    port: int = Field(8443, ge=0, le=65535)
    tls_cert: Path
    tls_key: Path
    # Seconds between checks of the certificate files' modification times.
    cert_reload_interval: float = Field(10.0, gt=0, le=3600)
    # An AdmissionReview of a Pod is well under this (the API server stores objects up to ~1.5 MB).
    max_body_bytes: int = Field(4 * MiB, ge=64 * 1024, le=64 * MiB)
    shutdown_grace: float = Field(5.0, ge=0)


class InjectorAdmin(_Section):
    host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from the kubelet / Prometheus
    port: int = Field(9465, ge=0, le=65535)


class Resources(_Section):
    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "50m", "memory": "64Mi"})
    # A single event loop: more than one CPU would sit idle.
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "1", "memory": "256Mi"})

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, str]) -> dict[str, str]:
        problems = [f"{name}: {value!r} is not a quantity like 50m, 1 or 256Mi"
                    for name, value in v.items() if not QUANTITY.match(str(value))]
        problems += [f"{name}: unknown resource (cpu, memory, ephemeral-storage)"
                     for name in v if name not in ("cpu", "memory", "ephemeral-storage")]
        if problems:
            raise ValueError(" | ".join(problems))
        return v


class SidecarTemplate(_Section):
    # Pinned by tag or digest; pods cannot choose another one (see the README).
    image: str
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # true: an init container with restartPolicy: Always (Kubernetes >= 1.29); false: a container.
    native_sidecar: bool = True
    port: int = Field(8080, ge=1, le=65535)
    admin_port: int = Field(9464, ge=1, le=65535)
    run_as_user: int = Field(10001, ge=1)
    run_as_group: int = Field(10001, ge=1)
    resources: Resources = Resources()
    # Used when a pod names none with authsidecar.io/config or authsidecar.io/secret.
    config_map: str = "authsidecar-config"
    secret: str | None = "authsidecar-secrets"  # noqa: S105 - a Secret's name
    # The ConfigMap key holding authsidecar.yaml.
    config_key: str = "authsidecar.yaml"
    # Config key -> Secret key: each becomes AUTHSIDECAR_<KEY>_FILE pointing at the mounted file.
    secret_files: dict[str, str] = Field(default_factory=lambda: {
        "oidc.client_secret": "client-secret", "cookies.secret": "cookie-secret"})

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        name, _, digest = v.partition("@")
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        if not (digest or tag) or tag == "latest" or not name or any(c.isspace() for c in v):
            raise ValueError("must name a pinned image: a tag other than latest, or a digest")
        return v

    @field_validator("config_map", "secret")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 253 or not DNS_SUBDOMAIN.match(v)):
            raise ValueError(f"{v!r} is not a Kubernetes object name")
        return v

    @field_validator("config_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not SECRET_KEY.match(v) or v in (".", ".."):
            raise ValueError(f"{v!r} is not a ConfigMap key")
        return v

    @field_validator("secret_files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        problems = [f"{k}: not a dotted config key like cookies.secret" for k in v if not CONFIG_KEY.match(k)]
        problems += [f"{k}: {s!r} is not a Secret key" for k, s in v.items()
                     if not SECRET_KEY.match(s) or s in (".", "..")]
        if problems:
            raise ValueError(" | ".join(problems))
        return v

    @model_validator(mode="after")
    def _ports(self) -> SidecarTemplate:
        if self.port == self.admin_port:
            raise ValueError("admin_port: must differ from port")
        return self


class InjectorLogging(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class InjectorSettings(_Section):
    listen: WebhookListen
    admin: InjectorAdmin = InjectorAdmin()
    sidecar: SidecarTemplate
    logging: InjectorLogging = InjectorLogging()


def _messages(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif item["type"] == "value_error":
            # "sub: problem" parts name a key below this one; several are joined by " | ".
            for part in str(item["msg"]).removeprefix("Value error, ").split(" | "):
                sub, sep, rest = part.partition(": ")
                named = sep and re.fullmatch(r"[A-Za-z0-9_.-]+", sub) is not None
                lines.append(f"{key}.{sub}: {rest}" if named and key else f"{key}: {part}")
        else:
            lines.append(f"{key}: {item['msg']}")
    return lines


def parse_injector_settings(data: Any) -> InjectorSettings:
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping of keys"])
    try:
        return InjectorSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_messages(exc)) from None


def load_injector_settings(path: str | Path) -> InjectorSettings:
    """Read and validate the injector's YAML file; :class:`ConfigError` lists every problem."""
    data = read_yaml_mapping(path)
    return parse_injector_settings(data)

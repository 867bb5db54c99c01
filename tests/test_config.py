"""The schema (sidecar.config): what it accepts builds an app, start-up warnings, logout.redirect_url."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from sidecar.app import create_app
from sidecar.auth.return_to import ReturnToPolicy
from sidecar.config import Settings, config_warnings
from sidecar.config_load import parse_settings
from sidecar.errors import ConfigError
from sidecar.observability import make_logger

BASE: dict[str, Any] = {
    "oidc": {"issuer": "https://idp.example.com", "client_id": "c"},
    "callback_url": "https://app.example.com/auth/callback",
    "app_url": "https://app.example.com/",
    "cookies": {"secret": "s" * 40},
}


def settings(**changes: Any) -> Settings:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


# -- what the schema accepts, serve accepts ------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="minimal"),
        pytest.param({"cookies": {"host_prefix": True}}, id="host-prefix-refresh-token-under-auth"),
        pytest.param({"cookies": {"host_prefix": True, "refresh_token_path": "/"}},
                     id="host-prefix-everywhere"),
        pytest.param({"cookies": {"domain": "example.com"}, "csrf": {"cookie_domain": "example.com"}},
                     id="shared-domain"),
        pytest.param({"csrf": {"cookie": "__Secure-XSRF"}}, id="secure-named-xsrf"),
        pytest.param({"app_url": "HTTPS://App.Example.com:443/home",
                      "allowed_return_origins": ["https://xn--bcher-kva.example"]},
                     id="default-port-upper-case-punycode"),
        pytest.param({"cors": {"allowed_origins": ["https://spa.example.com:8443"]}},
                     id="cors-origin-with-port"),
        pytest.param({"oidc": {"global_sign_out": True,
                               "scopes": ["openid", "email", "profile", "aws.cognito.signin.user.admin"]}},
                     id="global-sign-out-with-the-admin-scope"),
        pytest.param({"me_alias": "/whoami"}, id="me-alias"),
        pytest.param({"oidc": {"passthrough_params": ["lang", "ui_locales"]}}, id="passthrough-params"),
        pytest.param({"logout": {"redirect_url": "https://app.example.com/signed-out"}},
                     id="logout-redirect"),
    ],
)
def test_every_config_the_schema_accepts_builds_the_app(changes: dict[str, Any]) -> None:
    accepted = settings(**changes)

    create_app(accepted, registry=CollectorRegistry(), log=make_logger("error"))


def test_the_schema_reads_no_files() -> None:
    with pytest.raises(ValidationError, match="secret_file"):
        settings(cookies={"secret": None, "secret_file": "/etc/hostname"})


def test_origins_are_normalized_as_the_policies_compare_them() -> None:
    s = settings(allowed_return_origins=["HTTPS://Admin.Example.com:443/"],
                 cors={"allowed_origins": ["http://localhost:80"]})

    assert s.allowed_return_origins == ("https://admin.example.com",)
    assert s.cors.allowed_origins == ("http://localhost",)


# -- logout.redirect_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        pytest.param("https://app.example.com/signed-out", "https://app.example.com/signed-out",
                     id="app-origin"),
        pytest.param("https://app.example.com", "https://app.example.com/", id="app-origin-no-path"),
        pytest.param("https://APP.example.com:443/bye?x=1#top", "https://app.example.com/bye?x=1#top",
                     id="same-origin-other-spelling"),
        pytest.param("https://www.example.com/goodbye", "https://www.example.com/goodbye",
                     id="allowed-origin"),
    ],
)
def test_a_logout_redirect_on_an_allowed_origin_is_accepted_as_return_to_would_accept_it(
    url: str, resolved: str
) -> None:
    s = settings(app_url="https://app.example.com/home", allowed_return_origins=["https://www.example.com"],
                 logout={"redirect_url": url})

    assert s.logout.redirect_url == url
    assert ReturnToPolicy(s.app_url, s.allowed_return_origins).resolve(url) == resolved


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("https://elsewhere.example.com/", "is not on app_url's origin", id="other-origin"),
        pytest.param("https://app.example.com.evil.example/", "is not on app_url's origin", id="suffix-host"),
        pytest.param("http://app.example.com/", "is not on app_url's origin", id="other-scheme"),
        pytest.param("https://app.example.com:8443/", "is not on app_url's origin", id="other-port"),
        pytest.param("javascript:alert(1)", "is not an absolute http(s) URL", id="javascript"),
        pytest.param("https://user@app.example.com/", "is not an absolute http(s) URL", id="userinfo"),
        pytest.param("https://app.example.com//evil.example/", "is not an absolute http(s) URL",
                     id="double-slash-path"),
        pytest.param("https://app.example.com/%2F%2Fevil.example", "is not an absolute http(s) URL",
                     id="encoded-double-slash-path"),
        pytest.param("https://app.example.com/a\\b", "is not an absolute http(s) URL", id="backslash"),
        pytest.param("https://b\u00fccher.example/", "is not an absolute http(s) URL", id="idn"),
    ],
)
def test_a_logout_redirect_elsewhere_is_refused_in_one_line_naming_the_key(url: str, message: str) -> None:
    data = {**BASE, "logout": {"redirect_url": url}}

    with pytest.raises(ConfigError) as caught:
        parse_settings(data)

    assert len(caught.value.messages) == 1
    assert caught.value.messages[0].startswith(f"logout.redirect_url: {url!r} ")
    assert message in caught.value.messages[0]
    # Whatever the schema refuses, return_to would not send the browser there either.
    assert ReturnToPolicy(BASE["app_url"], ()).resolve(url) == BASE["app_url"]


def test_a_logout_redirect_must_be_absolute() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({**BASE, "logout": {"redirect_url": "/signed-out"}})

    assert list(caught.value.messages) == [
        "logout.redirect_url: '/signed-out' is not an absolute http(s) URL like "
        "https://app.example.com/signed-out (ASCII only, no userinfo)"
    ]


# -- start-up warnings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"public_paths": ["/static/"]},
                     ["public_paths.0: '/static/' matches only that exact path; "
                      "write '/static/**' for everything under it"], id="public-path"),
        pytest.param({"csrf": {"exempt_paths": ["/hooks/**", "/webhooks/"]}},
                     ["csrf.exempt_paths.1: '/webhooks/' matches only that exact path; "
                      "write '/webhooks/**' for everything under it"], id="csrf-exempt-path"),
        pytest.param({"rules": [{"path": "/admin/**"}, {"path": "/api/"}]},
                     ["rules.1.path: '/api/' matches only that exact path; "
                      "write '/api/**' for everything under it"], id="rule-path"),
        pytest.param({"public_paths": ["/a/", "/b/"]},
                     ["public_paths.0: '/a/' matches", "public_paths.1: '/b/' matches"], id="one-line-each"),
        pytest.param({"public_paths": ["/", "/static", "/static/**", "/static/*/", "/health"]}, [],
                     id="root-exact-and-wildcards-are-fine"),
    ],
)
def test_a_pattern_ending_in_a_slash_without_a_wildcard_gets_a_warning_naming_its_key(
    changes: dict[str, Any], expected: list[str]
) -> None:
    warnings = config_warnings(settings(**changes))

    assert len(warnings) == len(expected), warnings
    for line, want in zip(warnings, expected, strict=True):
        assert line.startswith(want)


def _schema_keys_missing(model: type[BaseModel], doc: object, prefix: str = "") -> list[str]:
    """Keys of ``model`` (nested sections included) that ``doc`` does not write out."""
    missing = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if not isinstance(doc, dict) or key not in doc:
            missing.append(prefix + key)
            continue
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and isinstance(doc[key], dict):
            missing += _schema_keys_missing(nested[0], doc[key], f"{prefix}{key}.")
    return missing


def test_the_example_config_writes_out_every_key_of_the_schema() -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "authsidecar.example.yaml"
    assert "every key" in example.read_text().splitlines()[0]

    assert _schema_keys_missing(Settings, yaml.safe_load(example.read_text())) == []

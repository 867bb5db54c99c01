"""The loader (sidecar.config_load): environment overrides, *_file keys, every problem in one round,
runtime defaults."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sidecar.config import Settings
from sidecar.config_load import STAND_INS, parse_settings, with_runtime_defaults
from sidecar.errors import ConfigError

BASE: dict[str, Any] = {
    "oidc": {"issuer": "https://idp.example.com", "client_id": "c"},
    "callback_url": "https://app.example.com/auth/callback",
    "app_url": "https://app.example.com/",
    "cookies": {"secret": "s" * 40},
}
DEV: dict[str, Any] = {**BASE, "dev_mode": True, "cookies": {"secure": False}}


def required_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.is_required():
            keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += required_keys(field.annotation, f"{prefix}{name}.")
        elif typing.get_origin(field.annotation) is tuple:
            continue  # a key inside a list stands for the whole list, which has a default
    return keys


def test_every_required_key_has_a_stand_in_so_the_other_rules_still_run() -> None:
    assert sorted(required_keys(Settings)) == sorted(STAND_INS)


def test_stand_ins_are_valid_values() -> None:
    data = {key: STAND_INS[key] for key in ("oidc", "callback_url", "app_url")}
    data["dev_mode"] = True

    parse_settings(data)


@pytest.mark.parametrize(
    ("key", "path"),
    [
        pytest.param(("oidc", "client_secret_file"), ("oidc", "client_secret"), id="section-key"),
        pytest.param(("cookies", "secret_file"), ("cookies", "secret"), id="cookie-secret"),
    ],
)
def test_a_file_key_becomes_the_value_with_its_trailing_newline_stripped(
    tmp_path: Path, key: tuple[str, str], path: tuple[str, str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-0123456789abcdefghijklmnopqrstuvwxyz\r\n", encoding="utf-8")
    data = {**BASE, key[0]: {**BASE.get(key[0], {}), key[1]: str(secret)}}
    data[key[0]].pop(path[1], None)

    settings = parse_settings(data)

    value = getattr(getattr(settings, path[0]), path[1])
    assert value.get_secret_value() == "from-a-file-0123456789abcdefghijklmnopqrstuvwxyz"


def test_a_file_key_inside_a_rule_is_read_and_an_unreadable_one_named_with_its_index(tmp_path: Path) -> None:
    good = tmp_path / "path"
    good.write_text("/admin/**\n", encoding="utf-8")
    data = {**BASE, "rules": [{"path_file": str(good)}, {"path_file": str(tmp_path / "missing")}]}

    with pytest.raises(ConfigError) as caught:
        parse_settings(data)

    assert list(caught.value.messages) == [
        f"rules.1.path_file: cannot read {tmp_path / 'missing'}: No such file or directory"
    ]
    assert parse_settings({**BASE, "rules": [{"path_file": str(good)}]}).rules[0].path == "/admin/**"


def test_a_file_key_inside_an_optional_section_is_read(tmp_path: Path) -> None:
    # store.redis is `RedisSettings | None`: its password_file is read like any section's.
    password = tmp_path / "redis-password"
    password.write_text("from-a-file\n", encoding="utf-8")
    store = {"backend": "redis", "redis": {"url": "rediss://cache.example.internal:6379/0",
                                           "password_file": str(password)}}

    settings = parse_settings({**BASE, "store": store})

    assert settings.store.redis is not None
    assert settings.store.redis.password is not None
    assert settings.store.redis.password.get_secret_value() == "from-a-file"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        pytest.param("AUTHSIDECAR_STORE__REDIS__KEY_PREFIX", "app:", id="key-prefix-ending-in-a-colon"),
        pytest.param("AUTHSIDECAR_STORE__REDIS__PASSWORD", "#like-a-comment", id="password-leading-hash"),
        pytest.param("AUTHSIDECAR_STORE__REDIS__PASSWORD", "123456", id="password-digits"),
        pytest.param("AUTHSIDECAR_STORE__REDIS__USERNAME", "null", id="username-yaml-null"),
    ],
)
def test_redis_credentials_and_prefix_from_the_environment_are_taken_as_written(name: str, raw: str) -> None:
    environ = {"AUTHSIDECAR_STORE__BACKEND": "redis",
               "AUTHSIDECAR_STORE__REDIS__URL": "rediss://cache.example.internal:6379/0", name: raw}

    redis = parse_settings(BASE, environ).store.redis

    assert redis is not None
    value = getattr(redis, name.rsplit("__", 1)[1].lower())
    assert (value.get_secret_value() if hasattr(value, "get_secret_value") else value) == raw


# -- environment overrides: the schema's type of the key says what the value means ---------------------

AUDIENCE = "AUTHSIDECAR_OIDC__ACCESS_TOKEN_AUDIENCE"  # an optional text key, no check of its own
CLIENT_ID = "AUTHSIDECAR_OIDC__CLIENT_ID"  # a required text key


def audience(settings: Settings) -> Any:
    return settings.oidc.access_token_audience


def client_id(settings: Settings) -> Any:
    return settings.oidc.client_id


def client_secret(settings: Settings) -> Any:
    secret = settings.oidc.client_secret
    return secret.get_secret_value() if secret is not None else None


@pytest.mark.parametrize(
    ("name", "raw", "read", "expected"),
    [
        pytest.param(AUDIENCE, "12345", audience, "12345", id="digits-stay-a-string"),
        pytest.param(AUDIENCE, "yes", audience, "yes", id="yes-stays-a-string"),
        pytest.param(AUDIENCE, "#abc", audience, "#abc", id="leading-hash-is-not-a-comment"),
        pytest.param(AUDIENCE, "abc #def", audience, "abc #def", id="inner-hash-is-kept"),
        pytest.param(AUDIENCE, "[x]", audience, "[x]", id="brackets-are-not-a-list"),
        pytest.param(AUDIENCE, "{a: b}", audience, "{a: b}", id="braces-are-not-a-mapping"),
        pytest.param(AUDIENCE, '"quoted"', audience, '"quoted"', id="quotes-are-kept"),
        pytest.param(AUDIENCE, "  spaced out  ", audience, "spaced out", id="surrounding-spaces-dropped"),
        pytest.param(AUDIENCE, "null", audience, None, id="null-unsets-an-optional-key"),
        pytest.param(AUDIENCE, "~", audience, None, id="tilde-unsets-an-optional-key"),
        pytest.param(AUDIENCE, " NULL ", audience, None, id="null-any-yaml-spelling-unsets-an-optional-key"),
        pytest.param(AUDIENCE, "nullable", audience, "nullable", id="a-word-starting-with-null-is-a-value"),
        pytest.param(CLIENT_ID, "null", client_id, "null", id="null-is-the-value-of-a-required-key"),
        pytest.param(CLIENT_ID, "~", client_id, "~", id="tilde-is-the-value-of-a-required-key"),
        pytest.param(CLIENT_ID, "12345", client_id, "12345", id="client-id-digits"),
        pytest.param("AUTHSIDECAR_OIDC__CLIENT_SECRET", "null", client_secret, "null",
                     id="null-is-the-value-of-a-secret"),
        pytest.param("AUTHSIDECAR_COOKIES__SAME_SITE", " strict ", lambda s: s.cookies.same_site, "strict",
                     id="a-choice-of-words-with-spaces"),
        pytest.param("AUTHSIDECAR_IDENTITY_HEADERS__CLAIMS__DEPT", "12345",
                     lambda s: s.identity_headers.claims, {"dept": "12345"}, id="a-mapping-value-of-text"),
        pytest.param("AUTHSIDECAR_LISTEN__TLS_CERT", "~", lambda s: s.listen.tls_cert, None,
                     id="tilde-unsets-an-optional-path"),
    ],
)
def test_a_text_key_from_the_environment_takes_the_value_as_written(
    name: str, raw: str, read: Any, expected: Any
) -> None:
    assert read(parse_settings(BASE, {name: raw})) == expected


@pytest.mark.parametrize(
    ("environ", "read", "expected"),
    [
        pytest.param({"AUTHSIDECAR_WORKERS": "2"}, lambda s: s.workers, 2, id="int"),
        pytest.param({"AUTHSIDECAR_WORKERS": "3  # one per core"}, lambda s: s.workers, 3,
                     id="int-with-a-yaml-comment"),
        pytest.param({"AUTHSIDECAR_UPSTREAM__READ_TIMEOUT": "12.5"}, lambda s: s.upstream.read_timeout, 12.5,
                     id="float"),
        pytest.param({"AUTHSIDECAR_LOGGING__ACCESS_LOG": "no"}, lambda s: s.logging.access_log, False,
                     id="bool-yaml-word"),
        pytest.param({"AUTHSIDECAR_TOKENS__ACCEPT_BEARER": "false"}, lambda s: s.tokens.accept_bearer, False,
                     id="bool"),
        pytest.param({"AUTHSIDECAR_CORS__ALLOWED_ORIGINS": "[https://spa.example.com, 'https://b.example.com']"},
                     lambda s: s.cors.allowed_origins, ("https://spa.example.com", "https://b.example.com"),
                     id="list-of-origins"),
        pytest.param({"AUTHSIDECAR_IDENTITY_HEADERS__CLAIMS": "{dept: X-User-Dept}"},
                     lambda s: s.identity_headers.claims, {"dept": "X-User-Dept"}, id="mapping"),
        pytest.param({"AUTHSIDECAR_UPSTREAM": "null"}, lambda s: s.upstream, None,
                     id="optional-section-null"),
        pytest.param({"AUTHSIDECAR_LOGOUT": "{backchannel: true}"}, lambda s: s.logout.backchannel, True,
                     id="section-as-a-flow-mapping"),
    ],
)
def test_any_other_key_from_the_environment_is_read_as_yaml(
    environ: dict[str, str], read: Any, expected: Any
) -> None:
    assert read(parse_settings(BASE, environ)) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"AUTHSIDECAR_OIDC__SECRET": "abc"}, "oidc.secret: unknown key", id="unknown-key-named"),
        pytest.param({"AUTHSIDECAR_LISTEN__PORT": "http"}, "listen.port: ", id="word-for-an-int"),
        pytest.param({"AUTHSIDECAR_WORKERS": "[2]"}, "workers: ", id="list-for-an-int"),
        pytest.param({"AUTHSIDECAR_UPSTREAM__URL": "null"}, "upstream.url: ", id="null-for-a-required-url"),
        pytest.param({"AUTHSIDECAR_COOKIES__SAME_SITE": "null"}, "cookies.same_site: ",
                     id="null-for-a-choice"),
        pytest.param({"AUTHSIDECAR_OIDC__CLIENT_ID__X": "a"}, "oidc.client_id: ",
                     id="a-text-key-has-no-sub-keys"),
    ],
)
def test_an_environment_value_the_key_cannot_take_is_refused_naming_the_key(
    environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(BASE, environ)

    assert len(caught.value.messages) == 1, caught.value.messages
    assert caught.value.messages[0].startswith(expected)


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param("12345", id="digits"),
        pytest.param("#abc", id="leading-hash"),
        pytest.param("abc #def", id="inner-hash"),
        pytest.param("[x]", id="brackets"),
        pytest.param("null", id="null"),
    ],
)
def test_a_text_key_read_from_a_file_takes_the_contents_as_written(tmp_path: Path, contents: str) -> None:
    secret = tmp_path / "client id #1"  # the path itself, from the environment, is taken as written
    secret.write_text(contents + "\n", encoding="utf-8")

    settings = parse_settings(BASE, {"AUTHSIDECAR_OIDC__CLIENT_ID_FILE": str(secret)})

    assert settings.oidc.client_id == contents


def test_an_unreadable_file_is_one_line_and_its_key_is_not_also_reported_missing() -> None:
    data = {**BASE, "oidc": {"issuer": "https://idp.example.com", "client_id_file": "/nonexistent/id"}}

    with pytest.raises(ConfigError) as caught:
        parse_settings(data)

    assert list(caught.value.messages) == [
        "oidc.client_id_file: cannot read /nonexistent/id: No such file or directory"
    ]


def test_with_every_field_broken_the_cross_key_rules_that_can_run_still_report() -> None:
    data = {"oidc": "not-a-mapping", "listen": {"port": -1}, "cookies": {"secure": False}, "bogus": 1}

    with pytest.raises(ConfigError) as caught:
        parse_settings(data)

    assert sorted(m.split(":")[0] for m in caught.value.messages) == sorted([
        "oidc", "listen.port", "bogus", "callback_url", "app_url", "cookies.secure", "cookies.secret",
    ])


# -- runtime defaults ------------------------------------------------------------------------------------


def test_dev_mode_without_a_secret_runs_on_a_random_one_per_call() -> None:
    settings = parse_settings(DEV)
    assert settings.cookies.secret is None

    first, second = with_runtime_defaults(settings), with_runtime_defaults(settings)

    assert first.cookies.secret is not None
    assert second.cookies.secret is not None
    assert len(first.cookies.secret.get_secret_value()) >= 64
    assert first.cookies.secret.get_secret_value() != second.cookies.secret.get_secret_value()
    assert first.model_copy(update={"cookies": settings.cookies}) == settings


def test_a_configured_secret_is_kept() -> None:
    settings = parse_settings({**DEV, "cookies": {"secure": False, "secret": "k" * 40}})

    assert with_runtime_defaults(settings) is settings

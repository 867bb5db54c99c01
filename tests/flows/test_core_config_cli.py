"""The command line: ``check-config`` refuses bad settings one line per problem, ``serve`` runs and
stops cleanly on SIGTERM. Both are run as ``python -m sidecar`` where the process boundary matters."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import unused_port

from sidecar import cli
from sidecar.config_load import load_settings
from sidecar.dev.provider import DevProvider, ProviderConfig, start_provider
from sidecar.dev.upstream import create_upstream_app
from tests.conftest import FakeClock
from tests.flows.serving import read_until, serving

PREFIX = "authsidecar: config error: "
COOKIE_SECRET = "cookie-secret-0123456789-abcdefghijklmnop"
CLIENT_SECRET = "client-secret-zyxwvutsrqponm-9876543210"
BASE: dict[str, Any] = {
    "oidc": {
        "issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc123",
        "client_id": "from-yaml",
        "client_secret": CLIENT_SECRET,
        "cognito_domain": "auth.example.com",
    },
    "callback_url": "https://app.example.com/auth/callback",
    "app_url": "https://app.example.com/",
    "cookies": {"secret": COOKIE_SECRET},
}


def config(**changes: Any) -> dict[str, Any]:
    """BASE with sections merged one level deep; a value of None removes the key."""
    out = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = {**out[key], **value}
            out[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            out[key] = value
    return out


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSIDECAR_")}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def no_ambient_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("AUTHSIDECAR_")]:
        monkeypatch.delenv(name)


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def check_config(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, list[str]]:
    code = cli.main(["check-config", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True, text=True, timeout=30, env=env if env is not None else clean_env(),
    )


# -- check-config: every problem one line naming its key ----------------------------------------------


# Every config check-config refuses, with the start of each expected stderr line (after PREFIX).
REFUSED = [
    pytest.param(config(oidcc={"issuer": "x"}), ["oidcc: unknown key"], id="unknown-top-level-key"),
    pytest.param(config(upstream={"urll": "http://x"}), ["upstream.urll: unknown key"],
                 id="unknown-nested-key"),
    pytest.param(config(rules=[{"path": "/a", "groupz": ["x"]}]), ["rules.0.groupz: unknown key"],
                 id="unknown-key-in-a-rule"),
    pytest.param(config(listen={"port": "eighty"}), ["listen.port: "], id="wrong-type-port"),
    pytest.param(config(listen={"port": 70000}), ["listen.port: "], id="port-out-of-range"),
    pytest.param(config(upstream="http://app:3000"), ["upstream: "], id="wrong-type-section"),
    pytest.param(config(tokens={"accept_bearer": "maybe"}), ["tokens.accept_bearer: "],
                 id="wrong-type-bool"),
    pytest.param(config(rules=[{"path": "/a", "claims": {"role": 5, "dept": ["a", 1]}}]),
                 ["rules.0.claims.role: must be a string", "rules.0.claims.dept: must be a string"],
                 id="wrong-type-rule-claims"),
    pytest.param(config(trusted_proxies=["10.0.0.0/8", "not-an-ip"]),
                 ["trusted_proxies: 'not-an-ip' is not an address or network"], id="wrong-trusted-proxy"),
    pytest.param(config(callback_url=None), ["callback_url: required key is missing"], id="missing-key"),
    pytest.param(config(oidc={"client_id": None}), ["oidc.client_id: required key is missing"],
                 id="missing-nested-key"),
    pytest.param(config(cookies={"same_site": "none", "secure": False}),
                 ["cookies.same_site: none requires secure: true",
                  "cookies.secure: must be true outside dev_mode"], id="same-site-none-without-secure"),
    pytest.param(config(dev_mode=True, cookies={"same_site": "none", "secure": False}),
                 ["cookies.same_site: none requires secure: true"],
                 id="same-site-none-without-secure-in-dev"),
    pytest.param(config(oidc={"issuer": "http://idp.example.com"}),
                 ["oidc.issuer: must be https outside dev_mode"], id="http-issuer-without-dev-mode"),
    pytest.param(config(cookies={"secure": False, "secret": None}),
                 ["cookies.secure: must be true outside dev_mode", "cookies.secret: required"],
                 id="two-cross-field-problems"),
    pytest.param(config(cookies={"secret": "short-secret"}), ["cookies.secret: must be at least 32"],
                 id="short-cookie-secret"),
    pytest.param(config(listen={"port": -1}, upstream={"url": "ftp://app"}, extra=1),
                 ["listen.port: ", "upstream.url: ", "extra: unknown key"], id="three-problems-at-once"),
    # Refused by check-config since the schema holds every start-up check (serve used to die on these).
    pytest.param(config(cookies={"host_prefix": True}, csrf={"cookie_domain": "example.com"}),
                 ["csrf.cookie_domain: cannot be set: the XSRF cookie is named '__Host-XSRF-TOKEN'"],
                 id="host-prefix-with-xsrf-cookie-domain"),
    pytest.param(config(cookies={"domain": "example.com"}, csrf={"cookie": "__Host-XSRF"}),
                 ["csrf.cookie: '__Host-XSRF': __Host- forbids a Domain"], id="host-named-xsrf-with-domain"),
    pytest.param(config(dev_mode=True, cookies={"secure": False}, csrf={"cookie": "__Secure-XSRF"}),
                 ["csrf.cookie: '__Secure-XSRF' needs cookies.secure: true"],
                 id="secure-named-xsrf-without-secure"),
    pytest.param(config(app_url="https://b\u00fccher.example/"),
                 ["app_url: 'https://b\u00fccher.example/' is not a URL the sidecar can use: write"],
                 id="idn-app-url"),
    pytest.param(config(callback_url="https://b\u00fccher.example/auth/callback"), ["callback_url: "],
                 id="idn-callback-url"),
    pytest.param(config(allowed_return_origins=["https://app.example.com", "https://b\u00fccher.example"]),
                 ["allowed_return_origins.1: 'https://b\u00fccher.example' is not an origin"],
                 id="idn-allowed-return-origin"),
    pytest.param(config(cors={"allowed_origins": ["https://b\u00fccher.example"]}),
                 ["cors.allowed_origins.0: "], id="idn-cors-origin"),
    pytest.param(config(app_url="https://user@app.example.com/"), ["app_url: "], id="app-url-with-userinfo"),
    pytest.param(config(app_url="https://app.example.com:99999/"), ["app_url: "], id="app-url-bad-port"),
    pytest.param(config(me_alias="me"), ["me_alias: 'me' is not a plain path"], id="me-alias-not-a-path"),
    pytest.param(config(me_alias="/auth/me"), ["me_alias: '/auth/me' is a route of the sidecar"],
                 id="me-alias-shadowing-an-auth-route"),
    pytest.param(config(me_alias="/me/{x"), ["me_alias: "], id="me-alias-unroutable"),
    pytest.param(config(oidc={"passthrough_params": ["lang", "state"]}),
                 ["oidc.passthrough_params: ['state'] are set by the sidecar itself"],
                 id="passthrough-param-the-sidecar-sets"),
    pytest.param(config(listen={"tls_cert": "/etc/tls/cert.pem"}), ["listen.tls_key: required when"],
                 id="tls-cert-without-key"),
    pytest.param(config(csrf={"exempt_paths": ["/hooks/**", "hooks"]}),
                 ["csrf.exempt_paths.1: 'hooks' must start with '/'"], id="relative-exempt-path"),
    pytest.param(config(cookies={"refresh_token_path": "auth"}), ["cookies.refresh_token_path: "],
                 id="relative-refresh-token-path"),
    pytest.param(config(logout={"redirect_url": "https://elsewhere.example.com/bye"}),
                 ["logout.redirect_url: 'https://elsewhere.example.com/bye' is not on app_url's origin"],
                 id="logout-redirect-to-another-origin"),
    pytest.param(config(store={"backend": "redis"}), ["store.redis: required when backend is redis"],
                 id="redis-store-without-redis"),
    pytest.param(config(store={"backend": "redis", "redis": {"url": "redis://user:pw@cache:6379/0"}}),
                 ["store.redis.url: put no credentials in the URL"], id="redis-credentials-in-url"),
    pytest.param(config(store={"backend": "redis", "redis": {"url": "http://cache:6379"}}),
                 ["store.redis.url: must be a redis:// or rediss:// URL"], id="redis-url-scheme"),
    pytest.param(config(store={"backend": "valkey"}), ["store.backend: "], id="unknown-store-backend"),
    pytest.param(config(sessions={"mode": "server"}), ["sessions.mode: server needs store.backend: redis"],
                 id="server-sessions-without-redis"),
    pytest.param(config(oidc={"global_sign_out": True}),
                 ["oidc.global_sign_out: true needs 'aws.cognito.signin.user.admin' in oidc.scopes"],
                 id="global-sign-out-without-the-admin-scope"),
    pytest.param(config(oidc={"global_sign_out": True, "scopes": ["openid", "aws.cognito.signin.user"]}),
                 ["oidc.global_sign_out: true needs 'aws.cognito.signin.user.admin' in oidc.scopes"],
                 id="global-sign-out-with-a-scope-that-only-looks-like-it"),
    # All problems in one round: a field error does not hide a cross-key error.
    pytest.param(config(listen={"port": "eighty"}, cookies={"host_prefix": True},
                        csrf={"cookie_domain": "example.com"}),
                 ["listen.port: ", "csrf.cookie_domain: cannot be set"],
                 id="field-and-cross-key-errors-at-once"),
    pytest.param(config(cookies={"secret": "short-secret", "same_site": "none", "secure": False}),
                 ["cookies.secret: must be at least 32", "cookies.same_site: none requires secure: true",
                  "cookies.secure: must be true outside dev_mode"],
                 id="field-and-cross-key-errors-in-one-section"),
    pytest.param(config(app_url=None, logout={"redirect_url": "https://elsewhere.example.com/"},
                        cookies={"secure": False}),
                 ["app_url: required key is missing", "cookies.secure: must be true"],
                 id="no-rule-speaks-about-a-missing-key"),
    pytest.param(config(cookies={"secret": None, "secret_file": "/nonexistent/secret"}),
                 ["cookies.secret_file: cannot read /nonexistent/secret"], id="unreadable-secret-file"),
    pytest.param(config(oidc={"client_id": None, "client_id_file": "/nonexistent/id"},
                        cookies={"same_site": "none", "secure": False}, dev_mode=True),
                 ["oidc.client_id_file: cannot read /nonexistent/id", "cookies.same_site: none requires"],
                 id="unreadable-file-and-cross-key-error-at-once"),
]


# Environment overrides check-config refuses (on top of a good file), with the expected line.
REFUSED_OVERRIDES = [
    pytest.param({"AUTHSIDECAR_OIDC__CLIENTID": "x"}, "oidc.clientid: unknown key", id="misspelt-key"),
    pytest.param({"AUTHSIDECAR_LISTEN__PORT": "abc"}, "listen.port: ", id="wrong-type"),
    pytest.param({"AUTHSIDECAR_COOKIES__SECRET_FILE": "/nonexistent/secret"},
                 "cookies.secret_file: cannot read /nonexistent/secret", id="unreadable-secret-file"),
    pytest.param({"AUTHSIDECAR_OIDC____CLIENT_ID": "x"},
                 "AUTHSIDECAR_OIDC____CLIENT_ID: empty key segment",
                 id="empty-segment"),
]


@pytest.mark.parametrize(("data", "expected"), REFUSED)
def test_check_config_prints_one_line_per_problem_naming_its_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], expected: list[str]
) -> None:
    code, out, lines = check_config(capsys, write(tmp_path, data))

    assert code == cli.EXIT_CONFIG == 2
    assert out == ""
    assert len(lines) == len(expected), lines
    for want in expected:
        assert sum(line.startswith(PREFIX + want) for line in lines) == 1, (want, lines)
    assert "short-secret" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("oidc: [unclosed\n  x: 1\n", "line 2 column 4: ", id="unclosed-bracket"),
        pytest.param("oidc:\n\tissuer: x\n", "line 2 column 1: ", id="tab-indent"),
        pytest.param("- just\n- a list\n", "top level must be a mapping of keys", id="not-a-mapping"),
    ],
)
def test_check_config_names_the_line_of_a_malformed_yaml_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)

    code, _out, lines = check_config(capsys, path)

    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{PREFIX}config file {path}")
    assert expected in lines[0]


def test_check_config_names_a_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, lines = check_config(capsys, tmp_path / "nowhere.yaml")

    assert code == 2
    assert lines == [f"{PREFIX}config file {tmp_path / 'nowhere.yaml'}: No such file or directory"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("oidc: [unclosed\n", "config file ", id="malformed-yaml"),
        pytest.param(yaml.safe_dump(config(oidcc={})), "oidcc: unknown key", id="unknown-key"),
        pytest.param(yaml.safe_dump(config(oidc={"issuer": "http://idp.example.com"})), "oidc.issuer: ",
                     id="http-issuer"),
    ],
)
def test_the_check_config_process_exits_2_with_one_stderr_line_and_no_traceback(
    tmp_path: Path, text: str, expected: str
) -> None:
    done = run_cli("check-config", "--config", str(write(tmp_path, text)))

    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(PREFIX + expected)
    assert "Traceback" not in done.stderr


def run_both(path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], ...]:
    """``check-config`` and ``serve`` on the same file and environment, side by side."""
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "sidecar", command, "--config", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for command in ("check-config", "serve")
    ]
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return tuple(done)


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        *[pytest.param(p.values[0], {}, p.values[1], id=p.id) for p in REFUSED],
        *[pytest.param(config(), p.values[0], [p.values[1]], id=f"env-{p.id}") for p in REFUSED_OVERRIDES],
        pytest.param("oidc: [unclosed\n", {}, ["config file "], id="malformed-yaml"),
    ],
)
def test_serve_refuses_exactly_what_check_config_refuses_with_the_same_lines(
    tmp_path: Path, data: dict[str, Any] | str, env: dict[str, str], expected: list[str]
) -> None:
    checked, served = run_both(write(tmp_path, data), clean_env(**env))

    for done in (checked, served):
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert "Traceback" not in done.stderr
    assert served.stderr == checked.stderr
    lines = checked.stderr.splitlines()
    assert len(lines) == len(expected), lines
    for want in expected:
        assert sum(line.startswith(PREFIX + want) for line in lines) == 1, (want, lines)


def test_check_config_prints_warnings_on_stderr_and_still_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, lines = check_config(capsys, write(tmp_path, config(public_paths=["/static/", "/health"])))

    assert code == 0
    assert lines == ["authsidecar: config warning: public_paths.0: '/static/' matches only that exact path; "
                     "write '/static/**' for everything under it"]
    assert json.loads(out)["public_paths"] == ["/static/", "/health"]


def test_check_config_prints_the_effective_config_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, lines = check_config(capsys, write(tmp_path, config()))

    assert (code, lines) == (0, [])
    effective = json.loads(out)
    assert effective["oidc"]["client_id"] == "from-yaml"
    assert effective["oidc"]["client_secret"] == "**********"
    assert effective["cookies"]["secret"] == "**********"
    assert COOKIE_SECRET not in out
    assert CLIENT_SECRET not in out


# -- the example configuration ------------------------------------------------------------------------

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "authsidecar.example.yaml"
EXAMPLE_REDIS_PASSWORD_FILE = "/var/run/secrets/authsidecar/redis-password"


def with_alternatives(text: str, *sections: str) -> str:
    """``text`` with each top-level ``section`` replaced by the commented-out one below it (the line
    ``# section:`` and the ``#   `` lines that follow), as a reader would uncomment it."""
    kept: list[str] = []
    dropping = uncommenting = False
    for line in text.splitlines():
        if any(line.startswith(f"{name}:") for name in sections):
            dropping = True
            continue
        if dropping and line.startswith(" "):
            continue
        dropping = False
        if any(line == f"# {name}:" for name in sections):
            uncommenting = True
        elif not (uncommenting and line.startswith("#   ")):
            uncommenting = False
        kept.append(line[2:] if uncommenting else line)
    return "\n".join(kept) + "\n"


EXAMPLES = [
    pytest.param((), {"store": {"backend": "memory", "redis": None},
                      "sessions": {"mode": "cookie", "cache_seconds": 5.0}}, id="as-shipped"),
    pytest.param(("store", "sessions"), {"store": {"backend": "redis"}, "sessions": {"mode": "server"}},
                 id="fleet-with-redis-and-server-sessions-uncommented"),
]


@pytest.mark.parametrize(("uncomment", "expected"), EXAMPLES)
def test_the_example_config_passes_check_config_without_reaching_its_redis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uncomment: tuple[str, ...], expected: dict[str, Any],
) -> None:
    password = tmp_path / "redis-password"
    password.write_text("redis-password-0123456789\n", encoding="utf-8")
    text = with_alternatives(EXAMPLE_CONFIG.read_text(encoding="utf-8"), *uncomment)
    assert [f"# {name}:" in text for name in uncomment] == [False] * len(uncomment)
    path = write(tmp_path, text.replace(EXAMPLE_REDIS_PASSWORD_FILE, str(password)))

    # check-config only reads and checks: the placeholder host (which resolves nowhere) is never asked.
    code, out, lines = check_config(capsys, path)

    assert (code, lines) == (0, [])
    effective = json.loads(out)
    for section, values in expected.items():
        assert {key: effective[section][key] for key in values} == values
    if "store" in uncomment:
        redis = effective["store"]["redis"]
        assert redis["url"] == "rediss://cache.example.internal:6379/0"
        assert redis["password"] == "**********"
        assert "redis-password-0123456789" not in out


# -- environment overrides and secret files ------------------------------------------------------------


def test_environment_overrides_and_secret_files_apply_and_stay_masked(tmp_path: Path) -> None:
    cookie_file = tmp_path / "cookie-secret"
    cookie_file.write_text("from-a-file-0123456789abcdefghijklmnopqrstuvwxyz\n", encoding="utf-8")
    client_file = tmp_path / "client-secret"
    client_file.write_text("client-secret-from-a-file\n", encoding="utf-8")
    path = write(tmp_path, config(cookies={"secret": None}, oidc={"client_secret": None}))
    env = clean_env(
        AUTHSIDECAR_OIDC__CLIENT_ID="from-env",
        AUTHSIDECAR_COOKIES__SECRET_FILE=str(cookie_file),
        AUTHSIDECAR_OIDC__CLIENT_SECRET_FILE=str(client_file),
        AUTHSIDECAR_UPSTREAM__READ_TIMEOUT="12.5",
        AUTHSIDECAR_PUBLIC_PATHS="[/public/**, /status]",
    )

    done = run_cli("check-config", "--config", str(path), env=env)

    assert (done.returncode, done.stderr) == (0, "")
    effective = json.loads(done.stdout)
    assert effective["oidc"]["client_id"] == "from-env"
    assert effective["upstream"]["read_timeout"] == 12.5
    assert effective["public_paths"] == ["/public/**", "/status"]
    assert effective["cookies"]["secret"] == effective["oidc"]["client_secret"] == "**********"
    assert "from-a-file" not in done.stdout

    settings = load_settings(path, env)
    assert settings.cookies.secret is not None
    assert settings.oidc.client_secret is not None
    assert settings.cookies.secret.get_secret_value() == "from-a-file-0123456789abcdefghijklmnopqrstuvwxyz"
    assert settings.oidc.client_secret.get_secret_value() == "client-secret-from-a-file"
    assert "from-a-file" not in repr(settings)
    assert "from-a-file" not in str(settings.cookies)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1234567", id="digits"),
        pytest.param("0x1F", id="hex-looking"),
        pytest.param("true", id="boolean-looking"),
        pytest.param("2024-01-01", id="date-looking"),
        pytest.param("#starts-like-a-comment-0123456789abcdef", id="leading-hash"),
        pytest.param("&starts-like-an-anchor-0123456789abcdef", id="leading-ampersand"),
        pytest.param("has a #hash inside-0123456789abcdefghij", id="inner-comment"),
        pytest.param("key: value-0123456789abcdefghijklmnopq", id="mapping-looking"),
    ],
)
def test_ids_and_secrets_from_the_environment_are_taken_verbatim(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, config())
    env = {"AUTHSIDECAR_OIDC__CLIENT_ID": value, "AUTHSIDECAR_OIDC__CLIENT_SECRET": value}

    settings = load_settings(path, env)

    assert settings.oidc.client_id == value
    assert settings.oidc.client_secret is not None
    assert settings.oidc.client_secret.get_secret_value() == value


@pytest.mark.parametrize(("env", "expected"), REFUSED_OVERRIDES)
def test_a_bad_environment_override_is_one_line_naming_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code, _out, lines = check_config(capsys, write(tmp_path, config()))

    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(PREFIX + expected)


# -- serve --------------------------------------------------------------------------------------------


@pytest.fixture
async def dev_provider() -> AsyncIterator[DevProvider]:
    provider = DevProvider(ProviderConfig(), FakeClock.from_wall_clock())
    runner, _issuer = await start_provider(provider)
    try:
        yield provider
    finally:
        await runner.cleanup()


@pytest.fixture
async def echo_upstream() -> AsyncIterator[str]:
    runner = web.AppRunner(create_upstream_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def serve_config(provider: DevProvider, port: int, **extra: Any) -> dict[str, Any]:
    """A dev-mode config for `serve` against ``provider``, public on 127.0.0.1:``port``."""
    issuer = provider.issuer
    return {
        "dev_mode": True,
        "oidc": {"issuer": issuer, "provider": "cognito", "cognito_domain": issuer,
                 "client_id": provider.config.client_id},
        "callback_url": f"http://127.0.0.1:{port}/auth/callback",
        "app_url": f"http://127.0.0.1:{port}/",
        **extra,
    }


async def test_serve_starts_proxies_and_exits_0_on_sigterm(
    tmp_path: Path, dev_provider: DevProvider, echo_upstream: str
) -> None:
    port, admin_port = unused_port(), unused_port()
    path = write(tmp_path, serve_config(dev_provider, port, cookies={"secure": False}))
    cookie_secret = tmp_path / "cookie-secret"
    cookie_secret.write_text(COOKIE_SECRET + "\n", encoding="utf-8")
    env = clean_env(
        AUTHSIDECAR_LISTEN__HOST="127.0.0.1", AUTHSIDECAR_LISTEN__PORT=str(port),
        AUTHSIDECAR_LISTEN__SHUTDOWN_GRACE="2",
        AUTHSIDECAR_ADMIN__HOST="127.0.0.1", AUTHSIDECAR_ADMIN__PORT=str(admin_port),
        AUTHSIDECAR_UPSTREAM__URL=echo_upstream, AUTHSIDECAR_COOKIES__SECRET_FILE=str(cookie_secret),
    )
    async with serving(path, env, admin_port=admin_port, timeout=20) as (proc, seen):
        token = dev_provider.mint_access_token("alice")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api",
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["identity"]["X-User-Name"] == "alice"
            async with session.get(f"http://127.0.0.1:{port}/api") as resp:
                assert resp.status == 401

        os.kill(proc.pid, signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)

    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in [*seen, *out.decode().splitlines()] if line.strip()]
    assert events[-2:] == ["shutting_down", "stopped"]
    assert "Traceback" not in err.decode()
    assert COOKIE_SECRET not in "".join(seen) + out.decode() + err.decode()
    assert token not in "".join(seen) + out.decode()


class HeldApp:
    """An app whose /held answers only once released, to keep a request in flight."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def held(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.Response(text="finished")


@pytest.fixture
async def held_app() -> AsyncIterator[HeldApp]:
    held = HeldApp()
    app = web.Application()
    app.router.add_get("/held", held.held)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    held.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield held
    finally:
        held.release.set()
        await runner.cleanup()


async def test_serve_lets_an_in_flight_request_finish_after_sigterm(
    tmp_path: Path, dev_provider: DevProvider, held_app: HeldApp
) -> None:
    port, admin_port = unused_port(), unused_port()
    path = write(tmp_path, serve_config(
        dev_provider, port,
        listen={"host": "127.0.0.1", "port": port, "shutdown_grace": 10},
        admin={"host": "127.0.0.1", "port": admin_port},
        upstream={"url": held_app.url},
        cookies={"secure": False, "secret": COOKIE_SECRET},
    ))
    async with serving(path, clean_env(), admin_port=admin_port, timeout=20) as (proc, seen):
        assert proc.stdout is not None
        async with aiohttp.ClientSession() as session:

            async def in_flight() -> tuple[int, str]:
                headers = {"Authorization": f"Bearer {dev_provider.mint_access_token('bob')}"}
                async with session.get(f"http://127.0.0.1:{port}/held", headers=headers) as resp:
                    return resp.status, await resp.text()

            request = asyncio.create_task(in_flight())
            await asyncio.wait_for(held_app.arrived.wait(), timeout=10)
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(read_until(proc.stdout, "shutting_down", seen), timeout=10)
            assert not request.done()
            async with session.get(f"http://127.0.0.1:{admin_port}/readyz") as ready:
                assert ready.status == 503
                assert await ready.json() == {"status": "not_ready", "reason": "shutting_down"}

            held_app.release.set()
            assert await asyncio.wait_for(request, timeout=10) == (200, "finished")
        await asyncio.wait_for(proc.wait(), timeout=20)

    assert proc.returncode == 0

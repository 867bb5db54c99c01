"""Settings from one YAML file, then ``AUTHSIDECAR_*`` environment overrides, then ``*_file`` secrets.

The only reader of configuration files, secret files and the environment. :func:`load_settings`
returns a frozen :class:`~sidecar.config.Settings` or raises :class:`~sidecar.errors.ConfigError`
listing every problem, each naming its dotted key, all in one round: a broken field does not hide
a broken cross-key rule (see :mod:`sidecar.config_rules`). The checks themselves are the schema's.

Environment overrides: ``AUTHSIDECAR_`` + the dotted key upper-cased with ``__`` between levels, e.g.
``AUTHSIDECAR_OIDC__CLIENT_ID`` sets ``oidc.client_id``. The schema's type of that key says what the
value means (:func:`_env_value`): a text key takes it as written, any other key reads it as YAML
(``true``, ``42``, ``[admins, ops]``). Any key ``X`` also accepts ``X_file``: the path of a file whose
contents (trailing newline stripped) become the value as written, for Kubernetes Secrets mounted as
files, e.g. ``AUTHSIDECAR_OIDC__CLIENT_SECRET_FILE=/var/run/secrets/oidc/client-secret``.
"""

from __future__ import annotations

import copy
import enum
import os
import re
import secrets
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from sidecar.config import FAILED_KEYS, AsWritten, Settings
from sidecar.errors import ConfigError

ENV_PREFIX = "AUTHSIDECAR_"
SECRET_ENV = ENV_PREFIX + "COOKIES__SECRET"
FILE_SUFFIX = "_file"
# YAML's words for null: they unset an optional text key from the environment as in the file.
NULL_WORDS = frozenset({"null", "Null", "NULL", "~"})
# Valid stand-ins for required keys whose own value failed, so the cross-key rules that do not read
# them can still run in the same round (the rules that read them are skipped).
STAND_INS: dict[str, Any] = {
    "oidc": {"issuer": "https://stand-in.invalid", "client_id": "stand-in"},
    "oidc.issuer": "https://stand-in.invalid",
    "oidc.client_id": "stand-in",
    "callback_url": "https://stand-in.invalid/auth/callback",
    "app_url": "https://stand-in.invalid/",
}


# Environment variables with the prefix that are not settings: the config file's path, and the
# supervisor's host-store socket handed to its workers.
_NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "HOST_STORE"})


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError([f"{name}: empty key segment (use __ between levels)"])
        value = _env_value(path, raw)
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError([f"{name}: conflicts with another override"])
            node = child
        node[path[-1]] = value
    return tree


def _env_value(path: Sequence[str], raw: str) -> Any:
    """What ``raw`` means for the key at ``path``: the schema's type of that key decides.

    A text key (str, SecretStr, a path, a Literal or Enum of words, a union of those) takes the
    value as written, surrounding whitespace dropped as in the file: read as YAML, ``12345`` would be
    a number, ``yes`` a boolean, ``#abc`` null, ``abc #def`` would lose `` #def`` and ``[x]`` would
    be a list. An optional one is unset by a word of :data:`NULL_WORDS`, unless it is a secret or
    marked :class:`~sidecar.config.AsWritten` (then the word is its value). An ``X_file`` key takes a
    path, as written. Any other key, or one the schema does not have (validation then refuses it,
    naming it), reads the value as YAML.
    """
    text = _text_key(path)
    if text is None:
        try:
            return yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            return raw
    optional, any_text = text
    if optional and not any_text and raw.strip() in NULL_WORDS:
        return None
    return raw.strip()


def _text_key(path: Sequence[str]) -> tuple[bool, bool] | None:
    """For a text key at ``path``: (optional, takes any text); None for any other key."""
    annotation: Any = Settings
    field: FieldInfo | None = None
    for depth, key in enumerate(path):
        members, _ = _members(annotation)
        inner = members[0] if len(members) == 1 else None
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            field = _field(inner, key)
            if field is None:
                base = key.removesuffix(FILE_SUFFIX)
                is_file_key = base != key and depth == len(path) - 1 and _field(inner, base) is not None
                return (False, True) if is_file_key else None
            annotation = field.annotation
        elif typing.get_origin(inner) in (dict, Mapping) and len(typing.get_args(inner)) == 2:
            field, annotation = None, typing.get_args(inner)[1]  # a mapping's values (e.g. claims)
        else:
            return None
    members, optional = _members(annotation)
    if not all(_is_text(m) for m in members):
        return None
    marked = field is not None and any(isinstance(m, AsWritten) for m in field.metadata)
    return optional, marked or SecretStr in members


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    return next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)


def _members(annotation: Any) -> tuple[tuple[Any, ...], bool]:
    """The types a key takes (the members of a union, Annotated unwrapped), and whether None is one."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        inner = tuple(_members(a)[0][0] for a in args if a is not type(None))
        return inner, type(None) in args
    return (annotation,), False


def _is_text(annotation: Any) -> bool:
    """str (and its subclasses: str Enums), SecretStr, paths, and Literals or Enums of strings."""
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if not isinstance(annotation, type):
        return False
    if issubclass(annotation, enum.Enum):
        return all(isinstance(m.value, str) for m in annotation)
    return issubclass(annotation, (str, SecretStr, PurePath))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


# -- *_file keys --------------------------------------------------------------------------------------


def _section(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model class of a field (and whether the field is a tuple of them), or None."""
    args = typing.get_args(annotation)
    if type(None) in args:  # an optional section (`redis: RedisSettings | None`): its *_file keys too
        annotation = next(a for a in args if a is not type(None))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def _read_files(data: Any, model: type[BaseModel], where: str, problems: list[str],
                unreadable: set[str]) -> Any:
    """``data`` with each ``X_file`` key of ``model`` (and its sections) replaced by ``X``: the text."""
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for key in list(out):
        if not isinstance(key, str):
            continue
        field = model.model_fields.get(key)
        if field is not None:
            inner, many = _section(field.annotation)
            if inner is not None and many and isinstance(out[key], list):
                out[key] = [_read_files(item, inner, f"{where}{key}.{i}.", problems, unreadable)
                            for i, item in enumerate(out[key])]
            elif inner is not None:
                out[key] = _read_files(out[key], inner, f"{where}{key}.", problems, unreadable)
            continue
        base = key.removesuffix(FILE_SUFFIX)
        if base == key or base not in model.model_fields:
            continue
        path = out.pop(key)
        try:
            out[base] = Path(str(path)).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{where}{key}: cannot read {path}: {exc.strerror or exc}")
            unreadable.add(f"{where}{base}")
    return out


# -- validation, every problem in one round -----------------------------------------------------------


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _stand_in(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data`` with ``key`` removed (its default applies), or set to its stand-in when required.

    A key inside a list stands for the whole list (the list is removed): a rule reading it is skipped.
    """
    parts = key.split(".")
    out = copy.deepcopy(data)
    node: Any = out
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            return out
        if depth == len(parts) - 1 or not isinstance(node[part], dict):
            dotted = ".".join(parts[: depth + 1])
            if dotted in STAND_INS:
                node[part] = copy.deepcopy(STAND_INS[dotted])
            else:
                del node[part]
            return out
        node = node[part]
    return out


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".")


def _failed_key(item: ErrorDetails) -> str:
    """The dotted key of a field error, cut before the first list index."""
    keys: list[str] = []
    for part in item["loc"]:
        if isinstance(part, int):
            break
        keys.append(part)
    return ".".join(keys)


def _validate(data: dict[str, Any], unreadable: set[str]) -> tuple[Settings | None, list[ErrorDetails]]:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        # A key whose file could not be read is reported once, as that file.
        errors = [e for e in exc.errors() if not any(_overlaps(_dotted(e["loc"]), u) for u in unreadable)]
    else:
        if not unreadable:
            return settings, []
        errors = []
    field_errors = [e for e in errors if e["loc"]]
    if not field_errors and not unreadable:
        return None, errors
    # Fields failed, so the cross-key rules did not run: run them again over stand-ins for the
    # failed keys, told which keys those are (the rules reading them are skipped).
    failed = {_failed_key(e) for e in field_errors} | unreadable
    for _ in range(3):
        pruned = data
        for key in sorted(failed):
            pruned = _stand_in(pruned, key)
        missing = {k for k in failed if k in STAND_INS}
        for key in sorted(missing):
            pruned = _stand_in_required(pruned, key)
        try:
            Settings.model_validate(pruned, context={FAILED_KEYS: frozenset(failed)})
            return None, field_errors
        except ValidationError as again:
            rest = again.errors()
        new = {_failed_key(e) for e in rest if e["loc"]} - failed
        if not new:
            return None, field_errors + [e for e in rest if not e["loc"]]
        failed |= new
    return None, field_errors


def _stand_in_required(data: dict[str, Any], key: str) -> dict[str, Any]:
    """Put the stand-in of a required ``key`` in place when it is absent (a missing key)."""
    out = copy.deepcopy(data)
    node: Any = out
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            return out
        node = node[part]
    node.setdefault(parts[-1], copy.deepcopy(STAND_INS[key]))
    return out


def _messages(errors: list[ErrorDetails]) -> list[str]:
    lines = []
    for item in errors:
        key = _dotted(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif kind == "missing":
            lines.append(f"{key}: required key is missing")
        elif kind == "value_error":
            # Validators name a sub-key as "name: problem"; several problems are joined by " | ".
            for part in str(item["msg"]).removeprefix("Value error, ").split(" | "):
                keyed = _KEYED.match(part) is not None
                lines.append(f"{key}.{part}" if key and keyed else part if keyed else f"{key}: {part}")
        else:
            lines.append(f"{key}: {item['msg']}")
    return lines


_KEYED = re.compile(r"^[a-z0-9_][a-z0-9_.]*: ")


def parse_settings(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Validate an already-parsed mapping (plus optional environment overrides and ``*_file`` keys)."""
    merged = _merge(dict(data), _env_overrides(environ or {}))
    file_problems: list[str] = []
    unreadable: set[str] = set()
    merged = _read_files(merged, Settings, "", file_problems, unreadable)
    settings, errors = _validate(merged, unreadable)
    if settings is not None and not file_problems:
        return settings
    raise ConfigError(file_problems + _messages(errors))


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Settings:
    """Read the YAML file (if any), apply ``AUTHSIDECAR_*`` overrides and validate."""
    data: Any = {}
    if path is not None:
        data = read_yaml_mapping(path)
    return parse_settings(data, environ)


def with_runtime_defaults(settings: Settings) -> Settings:
    """``settings`` as ``serve`` runs them: in dev mode without ``cookies.secret``, a random one.

    The CSRF and login-transaction keys derive from ``cookies.secret``; they must never derive from
    nothing. Outside dev mode the schema already requires the secret. The generated secret lives
    for this process (and the workers it starts): logins in flight do not survive a restart.
    """
    if settings.cookies.secret is not None:
        return settings
    cookies = settings.cookies.model_copy(update={"secret": SecretStr(secrets.token_urlsafe(48))})
    return settings.model_copy(update={"cookies": cookies})


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked (for ``check-config``)."""
    return settings.model_dump(mode="json")


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty: ``{}``), or :class:`ConfigError` naming the
    file, and the line and column of a syntax error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"config file {path}:{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: top level must be a mapping of keys"])
    return data

"""Authorization rules and public paths, compiled once at start-up.

Rules are ordered; the first whose path pattern and method match decides. A path that no rule
matches only needs a valid identity. Patterns: ``*`` matches within one path segment, ``**`` any
number of segments (``/api/**`` matches ``/api``, ``/api/`` and ``/api/a/b``); everything else is
literal.

Paths are matched as aiohttp gives them: percent-decoded (``/%61dmin`` is ``/admin``), but with dot
segments left in place. The app may resolve ``/public/../admin`` (or ``%2e%2e``, ``..;``, backslashes) to
``/admin`` while the sidecar sees a public path, so a request with a dot segment is refused
(:func:`check_path`); browsers never send one (the WHATWG URL parser removes them). Rules match
whatever spelling the app may route to the same handler: letters in any case, repeated slashes as
one, and ``;parameters`` of a segment ignored (servlet containers strip them). Public and
CSRF-exempt paths match exactly, so an odd spelling of them only costs a login.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.config import Rule
from sidecar.errors import AmbiguousPath, Forbidden
from sidecar.identity import Identity

# A "." or ".." segment, also with ";parameters" (Tomcat's "..;") or between backslashes (IIS).
_DOT_SEGMENT = re.compile(r"(?:^|[/\\])\.{1,2}(?:;[^/\\]*)?(?=[/\\]|\Z)")
_SLASHES = re.compile(r"//+")
_PARAMS = re.compile(r";[^/]*")


def check_path(path: str) -> None:
    """Raise :class:`AmbiguousPath` if the percent-decoded ``path`` has a dot segment."""
    if "." in path and _DOT_SEGMENT.search(path) is not None:
        raise AmbiguousPath("ambiguous_path")


def rule_path(path: str) -> str:
    """``path`` with segment parameters dropped and repeated slashes collapsed, for rule matching.

    In that order: dropping ``;x`` from ``/;x/admin`` leaves ``//admin``, which must still become
    ``/admin`` (or a rule for ``/admin/**`` would not see it).
    """
    if ";" in path:
        path = _PARAMS.sub("", path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    return path


def compile_pattern(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Translate a path pattern into an anchored regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL | flags)


class PathSet:
    """A set of path patterns answering ``path in paths`` (used for public and CSRF-exempt paths)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = tuple(patterns)
        self._exact = frozenset(p for p in patterns if "*" not in p)
        wild = [compile_pattern(p).pattern for p in patterns if "*" in p]
        self._wild = re.compile("|".join(f"(?:{w})" for w in wild), re.DOTALL) if wild else None

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        return path in self._exact or (self._wild is not None and self._wild.match(path) is not None)

    def __bool__(self) -> bool:
        return bool(self._exact) or self._wild is not None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    index: int
    source: str
    path: re.Pattern[str]
    methods: frozenset[str]
    groups_any: frozenset[str]
    groups_all: frozenset[str]
    scopes: frozenset[str]
    claims: tuple[tuple[str, frozenset[str]], ...]

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and self.path.match(path) is not None

    def allows(self, identity: Identity) -> bool:
        groups = frozenset(identity.groups)
        if self.groups_any and not (self.groups_any & groups):
            return False
        if not self.groups_all <= groups:
            return False
        if not self.scopes <= frozenset(identity.scopes):
            return False
        return all(_claim_matches(identity.claims.get(name), wanted) for name, wanted in self.claims)


def _claim_matches(value: Any, wanted: frozenset[str]) -> bool:
    if isinstance(value, (list, tuple)):
        return any(str(v) in wanted for v in value)
    if isinstance(value, bool):
        return ("true" if value else "false") in wanted
    return value is not None and str(value) in wanted


class RuleSet:
    """Ordered authorization rules; ``check`` raises :class:`Forbidden` naming the refusing rule."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(_compile(i, r) for i, r in enumerate(rules))

    def check(self, method: str, path: str, identity: Identity) -> None:
        path = rule_path(path)
        for rule in self.rules:
            if rule.matches(method, path):
                if not rule.allows(identity):
                    raise Forbidden("forbidden_by_rule", f"rule {rule.index} ({rule.source})")
                return


def _compile(index: int, rule: Rule) -> CompiledRule:
    claims: Mapping[str, str | tuple[str, ...]] = rule.claims
    return CompiledRule(
        index=index,
        source=rule.path,
        path=compile_pattern(rule_path(rule.path), re.IGNORECASE),
        methods=frozenset(rule.methods),
        groups_any=frozenset(rule.groups_any),
        groups_all=frozenset(rule.groups_all),
        scopes=frozenset(rule.scopes),
        claims=tuple(
            (k, frozenset([v]) if isinstance(v, str) else frozenset(v)) for k, v in claims.items()
        ),
    )

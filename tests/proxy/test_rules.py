"""Path patterns, public/CSRF-exempt path sets and authorization rules, as pure functions: tables.

``*`` stays inside one path segment and ``**`` crosses any number; everything else in a pattern is
literal (dots and regular-expression metacharacters included). Public and CSRF-exempt paths
(:class:`PathSet`) match exactly as written; rules (:class:`RuleSet`) also match other spellings the
app may route to the same handler (case, repeated slashes, ``;parameters``).
"""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config import Rule
from sidecar.errors import AmbiguousPath, Forbidden
from sidecar.identity import Identity
from sidecar.proxy.rules import PathSet, RuleSet, check_path, compile_pattern, rule_path


def person(
    groups: tuple[str, ...] = (), scopes: tuple[str, ...] = ("openid",), **claims: Any
) -> Identity:
    return Identity(
        sub="user-1", username=str(claims.get("username", "user")), email=None, groups=groups,
        scopes=scopes, expires_at=2_000_000_000, claims=claims,
    )


# -- compile_pattern -----------------------------------------------------------------------------------

PATTERNS = [
    # `*`: one segment, possibly empty, never a "/".
    ("/static/*", "/static/app.js", True, "star-matches-one-segment"),
    ("/static/*", "/static/", True, "star-matches-an-empty-last-segment"),
    ("/static/*", "/static", False, "star-needs-its-slash"),
    ("/static/*", "/static/a/b", False, "star-does-not-cross-a-slash"),
    ("/static/*", "/static/a/", False, "star-does-not-take-a-trailing-slash"),
    ("/static/*", "/static//b", False, "star-does-not-take-an-empty-segment-and-more"),
    ("/team/*/members", "/team/t1/members", True, "inner-star-matches-one-segment"),
    ("/team/*/members", "/team/t1/t2/members", False, "inner-star-does-not-cross-a-slash"),
    ("/team/*/members", "/team//members", True, "inner-star-matches-an-empty-segment"),
    ("/files/*.txt", "/files/a.txt", True, "star-inside-a-segment"),
    ("/files/*.txt", "/files/a/b.txt", False, "star-inside-a-segment-does-not-cross-a-slash"),
    ("/files/*.txt", "/files/a.txt/x", False, "star-inside-a-segment-is-anchored-at-the-end"),
    # `/**`: the bare prefix, the prefix with a slash, and any depth below it.
    ("/api/**", "/api", True, "slash-double-star-matches-the-bare-prefix"),
    ("/api/**", "/api/", True, "slash-double-star-matches-the-trailing-slash"),
    ("/api/**", "/api/a/b/c", True, "slash-double-star-matches-any-depth"),
    ("/api/**", "/apix", False, "slash-double-star-is-not-a-string-prefix"),
    ("/api/**", "/api-v2/a", False, "slash-double-star-needs-the-whole-segment"),
    ("/**", "/", True, "root-double-star-matches-the-root"),
    ("/**", "/any/thing", True, "root-double-star-matches-everything"),
    ("/a/**/z", "/a/z", True, "inner-double-star-matches-zero-segments"),
    ("/a/**/z", "/a/b/c/z", True, "inner-double-star-matches-many-segments"),
    ("/a/**/z", "/a/b/z/c", False, "inner-double-star-is-anchored-at-the-end"),
    # `**` not after a slash: any characters, slashes included.
    ("/x**", "/x/y/z", True, "bare-double-star-crosses-slashes"),
    ("/x**", "/xyz", True, "bare-double-star-within-a-segment"),
    # Literal text, dots and regular-expression metacharacters.
    ("/api/v1.0/items", "/api/v1.0/items", True, "literal-dot"),
    ("/api/v1.0/items", "/api/v1x0/items", False, "a-dot-is-not-any-character"),
    ("/a+b/(c)?/[d]", "/a+b/(c)?/[d]", True, "metacharacters-match-themselves"),
    ("/a+b/(c)?/[d]", "/aab/c/d", False, "metacharacters-are-not-regex"),
    ("/a|/b", "/b", False, "a-bar-is-no-alternation"),
    ("/price$", "/price$", True, "a-dollar-is-literal"),
    ("/x\\d", "/x1", False, "a-backslash-escape-is-literal"),
    ("/x\\d", "/x\\d", True, "a-backslash-matches-itself"),
    # Anchoring and exact case.
    ("/status", "/status", True, "exact"),
    ("/status", "/status/", False, "exact-is-not-its-trailing-slash-form"),
    ("/status/", "/status", False, "a-trailing-slash-is-not-dropped"),
    ("/status", "/status\n", False, "anchored-before-a-trailing-newline-too"),
    ("/status", "/statusx", False, "anchored-at-the-end"),
    ("/status", "/x/status", False, "anchored-at-the-start"),
    ("/Status", "/status", False, "case-sensitive-without-a-flag"),
    ("", "", True, "empty-pattern-matches-only-the-empty-path"),
    ("", "/", False, "empty-pattern-does-not-match-the-root"),
]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"), [p[:3] for p in PATTERNS], ids=[p[3] for p in PATTERNS]
)
def test_compile_pattern(pattern: str, path: str, matches: bool) -> None:
    assert (compile_pattern(pattern).match(path) is not None) is matches


# -- PathSet (public_paths, csrf.exempt_paths) ---------------------------------------------------------

PATH_SET = ["/status", "/static/*", "/public/**", "/v*/health"]
PATH_SET_CASES = [
    ("/status", True, "exact-entry"),
    ("/status/", False, "exact-entry-is-not-its-trailing-slash-form"),
    ("/STATUS", False, "exact-entry-is-case-sensitive"),
    ("/static/app.js", True, "one-star-entry"),
    ("/static/a/b", False, "one-star-entry-does-not-reach-deeper"),
    ("/static/a/b/c.js", False, "one-star-entry-does-not-reach-any-depth"),
    ("/public", True, "double-star-entry-bare-prefix"),
    ("/public/a/b", True, "double-star-entry-any-depth"),
    ("/publicity", False, "double-star-entry-is-no-string-prefix"),
    ("/v1/health", True, "star-inside-a-segment"),
    ("/v1/x/health", False, "star-inside-a-segment-stays-in-it"),
    ("/static", False, "one-star-entry-needs-its-segment"),
    ("/other", False, "unlisted"),
    ("/status/../admin", False, "exact-entry-followed-by-more"),
]


@pytest.mark.parametrize(
    ("path", "member"), [c[:2] for c in PATH_SET_CASES], ids=[c[2] for c in PATH_SET_CASES]
)
def test_path_set_membership(path: str, member: bool) -> None:
    assert (path in PathSet(PATH_SET)) is member


@pytest.mark.parametrize(
    ("patterns", "truthy"),
    [([], False), (["/x"], True), (["/x/*"], True)],
    ids=["empty", "exact-only", "wildcard-only"],
)
def test_path_set_is_truthy_when_it_holds_a_pattern(patterns: list[str], truthy: bool) -> None:
    assert bool(PathSet(patterns)) is truthy


@pytest.mark.parametrize("value", [None, 1, b"/status"], ids=["none", "int", "bytes"])
def test_a_path_set_holds_no_value_that_is_not_a_string(value: object) -> None:
    assert value not in PathSet(["/status", "/**"])


def test_each_wildcard_of_a_path_set_is_anchored_on_its_own() -> None:
    # Joined into one alternation: each alternative keeps its own end anchor.
    paths = PathSet(["/a/*", "/b/**"])
    assert "/b/x/y" in paths
    assert "/a/x" in paths
    assert "/a/x/y" not in paths
    assert "/c/a/x" not in paths


# -- rule_path and check_path --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/admin", "/admin"),
        ("//admin//users", "/admin/users"),
        ("/admin;jsessionid=1/users", "/admin/users"),
        ("/admin;a=1;b=2", "/admin"),
        ("/a;x//b;y", "/a/b"),
    ],
    ids=["plain", "repeated-slashes", "segment-parameter", "several-parameters", "both"],
)
def test_rule_path_is_the_spelling_rules_match(path: str, expected: str) -> None:
    assert rule_path(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/a/../b", "/a/./b", "/..", "/.", "/a/..", "/a/..;x/b", "/a\\..\\b", "/a/.;x/b", "..", "/a/b/.."],
    ids=["dot-dot", "dot", "root-dot-dot", "root-dot", "trailing-dot-dot", "tomcat-dot-dot-params",
         "backslashes", "dot-params", "bare-dot-dot", "last-dot-dot"],
)
def test_a_path_with_a_dot_segment_is_ambiguous(path: str) -> None:
    with pytest.raises(AmbiguousPath):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    ["/a/.../b", "/a/.hidden", "/a/b.", "/a/..b", "/v1.0/x", "/a/b..", "/"],
    ids=["three-dots", "dot-file", "trailing-dot-in-a-name", "dot-dot-prefix", "version", "dots-at-the-end",
         "root"],
)
def test_names_with_dots_that_are_not_dot_segments_are_fine(path: str) -> None:
    check_path(path)


# -- RuleSet --------------------------------------------------------------------------------------------

RULES = [
    Rule(path="/admin/**", groups_any=("admins",)),
    Rule(path="/reports/*", methods=("post", "DELETE"), groups_any=("admins",)),
    Rule(path="/both/**", groups_all=("admins", "ops")),
    Rule(path="/write/**", scopes=("write",)),
    Rule(path="/tenant/*", claims={"tenant": "acme"}),
    Rule(path="/team/*/members", claims={"team": ("red", "blue")}),
    Rule(path="/verified/**", claims={"email_verified": "true"}),
    Rule(path="/level/**", claims={"level": "3"}),
    Rule(path="/docs/open"),
    Rule(path="/docs/**", groups_any=("staff",)),
    Rule(path="/v1.0/*", groups_any=("admins",)),
]
NOBODY = person()
ADMIN = person(groups=("admins",))
RULE_CASES: list[tuple[Identity, str, str, str | None, str]] = [
    # (who, method, path, refusing rule index or None, id)
    (ADMIN, "GET", "/admin/users", None, "groups-any-has-one"),
    (NOBODY, "GET", "/admin/users", "0", "groups-any-has-none"),
    (person(groups=("users", "admins")), "GET", "/admin", None, "groups-any-has-one-of-several"),
    (NOBODY, "GET", "/admin", "0", "double-star-covers-the-bare-prefix"),
    (NOBODY, "GET", "/ADMIN/users", "0", "rules-ignore-case"),
    (NOBODY, "GET", "//admin//users", "0", "rules-collapse-repeated-slashes"),
    (NOBODY, "GET", "/admin;x=1/users", "0", "rules-ignore-segment-parameters"),
    (NOBODY, "GET", "/administrator", None, "a-longer-segment-is-another-path"),
    (NOBODY, "GET", "/reports/q3", None, "methods-filter-lets-other-methods-pass"),
    (NOBODY, "POST", "/reports/q3", "1", "methods-are-upper-cased-at-the-door"),
    (NOBODY, "DELETE", "/reports/q3", "1", "methods-filter-applies"),
    (ADMIN, "POST", "/reports/q3", None, "methods-filter-allows-the-group"),
    (NOBODY, "POST", "/reports/q3/details", None, "star-rule-does-not-reach-deeper"),
    (person(groups=("admins", "ops", "x")), "GET", "/both/x", None, "groups-all-has-all"),
    (ADMIN, "GET", "/both/x", "2", "groups-all-misses-one"),
    (person(scopes=("openid", "write")), "GET", "/write/x", None, "scope-present"),
    (NOBODY, "GET", "/write/x", "3", "scope-missing"),
    (person(tenant="acme"), "GET", "/tenant/x", None, "claim-equal"),
    (person(tenant="evil"), "GET", "/tenant/x", "4", "claim-differs"),
    (NOBODY, "GET", "/tenant/x", "4", "claim-missing"),
    (person(tenant=["evil", "acme"]), "GET", "/tenant/x", None, "claim-list-holds-the-value"),
    (person(tenant="ACME"), "GET", "/tenant/x", "4", "claim-values-are-case-sensitive"),
    (NOBODY, "GET", "/tenant/x/y", None, "star-rule-leaves-deeper-paths-alone"),
    (person(team="blue"), "GET", "/team/t1/members", None, "claim-one-of-several"),
    (person(team="green"), "GET", "/team/t1/members", "5", "claim-none-of-several"),
    (person(email_verified=True), "GET", "/verified/x", None, "bool-claim-true"),
    (person(email_verified=False), "GET", "/verified/x", "6", "bool-claim-false"),
    (person(email_verified="True"), "GET", "/verified/x", "6", "bool-claim-as-other-text"),
    (person(level=3), "GET", "/level/x", None, "number-claim-as-text"),
    (NOBODY, "GET", "/docs/open", None, "first-match-wins"),
    (NOBODY, "GET", "/docs/secret", "9", "first-match-wins-later-rule"),
    (NOBODY, "GET", "/v1.0/x", "10", "literal-dot"),
    (NOBODY, "GET", "/v1x0/x", None, "a-dot-is-no-wildcard"),
    (NOBODY, "GET", "/elsewhere", None, "unmatched-path-needs-only-an-identity"),
    (NOBODY, "GET", "/;x/admin/users", "0", "a-parameter-segment-before-the-admin-path"),
]


@pytest.mark.parametrize(
    ("who", "method", "path", "refused_by"),
    [c[:4] for c in RULE_CASES],
    ids=[c[4] for c in RULE_CASES],
)
def test_rule_set(who: Identity, method: str, path: str, refused_by: str | None) -> None:
    rules = RuleSet(RULES)
    if refused_by is None:
        rules.check(method, path, who)
        return
    with pytest.raises(Forbidden) as refused:
        rules.check(method, path, who)
    assert refused.value.reason == "forbidden_by_rule"
    assert refused.value.detail == f"rule {refused_by} ({RULES[int(refused_by)].path})"


def test_no_rules_allow_every_identity() -> None:
    RuleSet([]).check("DELETE", "/anything", NOBODY)

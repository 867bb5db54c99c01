"""What each scenario sends, to whom, and how long: data only; bench/run.py runs them."""

from __future__ import annotations

from dataclasses import dataclass

ALL_TARGETS = ("authsidecar", "bare", "haproxy-jwt", "nginx")
# The C peers that verify tokens: HAProxy jwt_verify and Apache mod_auth_openidc (oauth20 mode).
C_PEERS = ("haproxy-jwt", "apache-oidc")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    about: str
    kind: str  # "wrk", "ws", "openloop"
    targets: tuple[str, ...]
    script: str = ""
    path: str = "/"
    connections: int = 64
    headline: bool = False  # more rounds: the ratios everyone quotes come from here
    rate_of: str = ""  # open loop: half the cookie-scenario throughput of this target
    workers: int = 1  # its targets run this many workers (needs authsidecar serve --workers)
    # Every answer of a validating target is a refusal (401/400): not counted as an error, but
    # reported per request (a target that let one through would show below 1.00).
    refused: bool = False


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "cookie",
        "Valid session cookie (validation cache warm)",
        "GET / with a browser's session cookies (access + ID token of one user) and its usual "
        "`User-Agent`/`Accept*` headers on every request: "
        "after the first request authsidecar answers from its validation cache. HAProxy verifies "
        "the RS256 signature on every request (it has no cache).",
        "wrk",
        (*ALL_TARGETS, "authsidecar-quiet"),
        script="cookie.lua",
        headline=True,
    ),
    Scenario(
        "cookie-2w",
        "Valid session cookie, two workers per target",
        "As `cookie`, every target with two workers (authsidecar `serve --workers 2`, the bare proxy "
        "as two processes on one port, HAProxy `nbthread 2`, nginx `worker_processes 2`) on both "
        "cores, which they share with the upstream and wrk: on this two-core machine that measures "
        "how far a second worker helps when the load generator needs a core too, not clean scaling. "
        "authsidecar with one worker (on core 0 as elsewhere) runs in the same rounds, for the ratio "
        "2 workers / 1 worker.",
        "wrk",
        ("authsidecar-2w", "bare-2w", "haproxy-jwt-2w", "nginx-2w", "authsidecar"),
        script="cookie.lua",
        workers=2,
    ),
    Scenario(
        "server-session",
        "Server session vs token cookies (warm)",
        "GET / as in `cookie`, three ways: `authsidecar-server` runs `sessions.mode: server` on a "
        "redis-server (on the load core) and the browser sends only its opaque session cookie (the "
        "session seeded into Redis as a login would leave it); `authsidecar` carries the tokens in its "
        "cookies (the default); `bare` is the floor. Warm: the session is in the worker's memory "
        "(a Redis read at most every `sessions.cache_seconds`, 5 s), the token in the validation cache. "
        "Target: server sessions at 0.95 or more of token cookies.",
        "wrk",
        ("authsidecar-server", "authsidecar", "bare"),
        script="cookie.lua",
        headline=True,
    ),
    Scenario(
        "bearer",
        "Bearer token (validation cache warm)",
        "GET / with `Authorization: Bearer` and one access token, and no other header but `Host`, "
        "as a minimal API client sends it.",
        "wrk",
        ALL_TARGETS,
        script="bearer.lua",
    ),
    Scenario(
        "users",
        "Distinct users in rotation (validation cache cold)",
        "GET / with the access-token cookie of one of {users} distinct users, in rotation. "
        "authsidecar runs with `tokens.validation_cache_size: {cache}` here, smaller than the "
        "rotation, so every request is a cache miss: RS256 verification, claim checks, cache insert "
        "(an LRU smaller than a cyclic working set never hits). Also misses authsidecar's parsed-Cookie "
        "cache (1,024 entries). bare and nginx ignore the token and are there for the ratio.",
        "wrk",
        ("authsidecar", "bare", "haproxy-jwt"),
        script="rotate.lua",
    ),
    Scenario(
        "cold",
        "Truly cold: every request a verification",
        "GET / with `Authorization: Bearer` and the access token of one of {users} distinct users, "
        "in rotation. authsidecar runs with `tokens.validation_cache_size: 0` "
        "(`authsidecar-nocache`): every request is a full RS256 verification, claim checks and "
        "identity, as for HAProxy and Apache mod_auth_openidc, which verify every token in C. "
        "bare is there for the ratio.",
        "wrk",
        ("authsidecar-nocache", "bare", *C_PEERS),
        script="rotate.lua",
    ),
    Scenario(
        "cold-parts",
        "Truly cold, taken apart: what each part of a miss costs in the server",
        "The `cold` load against authsidecar cut down to one part of a cache miss (bench/floor.py; "
        "every token verified for real the first time it is seen, its Identity kept): `floor-none` "
        "does no JOSE work at all, `floor-rsa` only jwcrypto's RS256 verification of the signature, "
        "`floor-busy` as long a piece of plain CPU work instead (calibrated to the verification in a "
        "tight loop). `authsidecar-nocache-quiet` is the whole miss without the access log, as Apache "
        "runs here.",
        "wrk",
        ("authsidecar-nocache", "authsidecar-nocache-quiet", "floor-none", "floor-rsa", "floor-busy",
         "apache-oidc", "bare"),
        script="rotate.lua",
    ),
    Scenario(
        "forged",
        "Forged tokens: a known kid, a signature that does not verify",
        "GET / with `Authorization: Bearer` and one of {forged} distinct forged tokens in rotation: "
        "real users' headers and claims, each with another token's signature (valid base64url, the "
        "provider's kid). authsidecar (default cache) verifies each once and then remembers it as "
        "forged (16,384 entries); the C peers verify every time. Every answer is a 401.",
        "wrk",
        ("authsidecar", "bare", *C_PEERS),
        script="rotate.lua",
        refused=True,
    ),
    Scenario(
        "garbage",
        "Garbage credentials: invalid shapes",
        "GET / with `Authorization: Bearer` and one of {garbage} malformed values in rotation: bytes "
        "that are not UTF-8, Latin-1, two or four segments, characters outside base64url, a header "
        "that is not JSON, 6 KB of junk. Refused before anything hashes or decodes them.",
        "wrk",
        ("authsidecar", "bare", *C_PEERS),
        script="rotate.lua",
        refused=True,
    ),
    Scenario(
        "verify",
        "Behind nginx: auth_request + /auth/verify vs nginx → authsidecar (cookie, cache warm)",
        "The `cookie` load (a browser's session cookie, validation cache warm) through nginx in front of "
        "authsidecar, two ways. `nginx-verify`: nginx `auth_request` sends every request's headers to "
        "authsidecar's `/auth/verify` (a subrequest with `X-Original-URI`/`-Method`, no body) and, on "
        "its 200, proxies the request to the app itself with the identity headers taken from the answer "
        "(`auth_request_set`) and the app's own cookies (`X-Authsidecar-Cookie`); authsidecar runs "
        "without an upstream (`upstream: null`), as in a forward-auth deployment. `nginx-sidecar`: nginx "
        "`proxy_pass` to authsidecar in its normal proxy mode, which proxies to the app. nginx has one "
        "worker and keep-alive connections to authsidecar and the app; nginx and authsidecar both run "
        "on the target core, so each pair is measured whole against HAProxy `jwt_verify` (C, one process, "
        "same core), authsidecar alone and nginx alone (no auth, the floor). *CPU µs/req* is the whole "
        "target's (nginx and authsidecar); *authsidecar CPU µs/req* is authsidecar's own process alone "
        "(for `nginx-verify`: what serving one verify subrequest costs it).",
        "wrk",
        ("nginx-verify", "nginx-sidecar", "haproxy-jwt", "authsidecar", "nginx"),
        script="cookie.lua",
        headline=True,  # the ratios of the forward-auth question: as many rounds as cookie
    ),
    Scenario(
        "refresh",
        "Expired access token, transparent refresh",
        "GET / with an expired access token and a live refresh token (`cookies.refresh_token_path: "
        '"/"`); {sessions} sessions in rotation, so each request makes authsidecar call the dev '
        "provider's token endpoint (refresh_token grant), verify the new access and ID tokens and set "
        "new cookies. The provider (Python, in the harness, on the load core) signs two RS256 tokens per "
        "refresh and is likely the limit: the provider's CPU per refresh is reported.",
        "wrk",
        ("authsidecar",),
        script="rotate.lua",
        connections=16,
    ),
    Scenario(
        "big",
        "1 MiB response",
        "GET /big with the session cookie: a 1 MiB response (Content-Length) streamed through.",
        "wrk",
        ALL_TARGETS,
        script="cookie.lua",
        path="/big",
        connections=16,
    ),
    Scenario(
        "upload",
        "1 MiB upload",
        "POST /upload, 1 MiB body, Bearer token (CSRF checks apply to cookie-authenticated POSTs, "
        "not to API clients): the body is streamed to the app.",
        "wrk",
        ALL_TARGETS,
        script="upload.lua",
        path="/upload",
        connections=16,
    ),
    Scenario(
        "ws",
        "WebSocket echo",
        "32 websockets through the proxy (opened with the session cookie), each sending a 64-byte "
        "message and waiting for its echo, repeatedly (bench/wsclient.py, aiohttp). The client is "
        "Python too: its own cost is in the round-trip times.",
        "ws",
        ALL_TARGETS,
        path="/ws",
        connections=32,
    ),
    Scenario(
        "halfrate",
        "Added latency at half the bare proxy's saturating rate",
        "Open-loop fixed-rate load (bench/openloop.py, latency from each request's scheduled send "
        "time, like wrk2, which Debian does not package) at half the rate the bare proxy reached in "
        "the cookie scenario, with the session cookie. `direct` is the upstream without a proxy; "
        "*added p99* is a target's p99 minus direct's p99 in the same round; it can come out "
        "negative, since direct runs the generator and the upstream on one core: read that as no "
        "measurable added latency. A target that cannot sustain the rate shows it as a lower req/s "
        "and a p99 that is mostly queueing.",
        "openloop",
        ("direct", *ALL_TARGETS),
        connections=64,
        rate_of="bare",
    ),
    Scenario(
        "halfrate-sidecar",
        "Added latency at half authsidecar's saturating rate",
        "As `halfrate`, at half the rate authsidecar itself reached in the cookie scenario: every "
        "target at the same load, one that authsidecar sustains at about 50% of its core. "
        "`authsidecar-quiet` (no access log) shows what the log adds to the tail.",
        "openloop",
        ("direct", *ALL_TARGETS, "authsidecar-quiet"),
        connections=64,
        rate_of="authsidecar",
    ),
)

BY_KEY = {s.key: s for s in SCENARIOS}

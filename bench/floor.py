"""authsidecar with its cache miss cut down to one part: what each part of a cold request costs in the server.

    python bench/floor.py {none|rsa|busy} serve --config FILE

Runs ``authsidecar serve`` in this process (one worker) after replacing
``TokenValidator.verify_access`` — what a validation-cache miss calls — with a stand-in. The first
time a token is seen it is verified for real and its Identity kept; after that, per request:

* ``none``: the kept Identity and nothing else: the price of the request without any JOSE work;
* ``rsa``: jwcrypto's RS256 verification of the token's signature, then the kept Identity: the
  signature alone, as the server pays it;
* ``busy``: as long a piece of plain CPU work (``sum(range(n))``, ``n`` calibrated at the first token
  so that it takes what the verification takes in a tight loop), then the kept Identity: any fixed
  cost of that size, crypto or not.

Run with ``tokens.validation_cache_size: 0`` so every request is a miss (bench/run.py's ``cold-parts``
scenario). A measuring instrument only: the stand-in reads the validator's private parts, and
nothing here is for a deployment.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from jwcrypto.common import base64url_decode

from sidecar.identity import Identity
from sidecar.oidc import tokens

MODES = ("none", "rsa", "busy")


def _calibrate(verify: Any) -> int:
    """``n`` such that ``sum(range(n))`` takes as long as ``verify()`` in a tight loop."""
    started = time.perf_counter()
    for _ in range(200):
        verify()
    per_verify = (time.perf_counter() - started) / 200
    n = 1000
    started = time.perf_counter()
    for _ in range(200):
        sum(range(n))
    per_sum = (time.perf_counter() - started) / 200
    return max(1, round(n * per_verify / per_sum))


def install(mode: str) -> None:
    real = tokens.TokenValidator.verify_access
    seen: dict[str, tuple[Identity, Any]] = {}
    busy_n = 0

    async def verify_access(self: tokens.TokenValidator, token: str) -> Identity:
        nonlocal busy_n
        kept = seen.get(token)
        if kept is None:
            identity = await real(self, token)
            header = token.partition(".")[0]
            alg, kid = tokens._header(header, self._policy)
            key = self._jwks.keys.get(kid or "")
            signed, _, signature = token.rpartition(".")
            engine, data, sig = self._engines[alg], signed.encode("ascii"), base64url_decode(signature)

            def verify() -> None:
                engine.verify(key, data, sig)

            if mode == "busy" and busy_n == 0:
                busy_n = _calibrate(verify)
                print(f"floor: busy n={busy_n}", file=sys.stderr, flush=True)
            kept = seen[token] = (identity, verify)
            return identity
        if mode == "rsa":
            kept[1]()
        elif mode == "busy":
            sum(range(busy_n))
        return kept[0]

    tokens.TokenValidator.verify_access = verify_access  # type: ignore[method-assign]


def main() -> int:
    mode = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if mode not in MODES:
        print(f"usage: floor.py {{{'|'.join(MODES)}}} serve --config FILE", file=sys.stderr)
        return 2
    install(mode)
    from sidecar.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

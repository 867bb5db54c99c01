#!/usr/bin/env bash
# The whole check: lint, strict typing and the test suite (real servers, a real browser, on loopback).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh test
# The browser tests drive Debian's Chromium (never a downloaded browser build).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "authsidecar: /usr/bin/chromium is missing; the browser tests need Debian's chromium package" >&2
  fi
fi
# The forward-auth tests drive Debian's nginx (auth_request) and Caddy (forward_auth) binaries;
# the fleet tests a real redis-server. Each on a free loopback port, started by the tests.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    # The tests start their own instances (on loopback, with generated configurations).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "authsidecar: ${missing[*]} missing; the gateway and fleet tests need Debian's nginx-light, caddy and redis-server" >&2
  fi
fi
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict sidecar/"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The demo: a Cognito-shaped dev provider, a demo app and authsidecar in front of it, on this machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec .venv/bin/authsidecar dev "$@"

#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k ingress -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"

#!/usr/bin/env bash
# The README's demo command: set up (idempotent) and run `callbridge demo`.
# Extra arguments go to the demo, e.g. `bash scripts/demo.sh --calls 5 --json`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/callbridge demo "$@"

#!/usr/bin/env bash
# Audit the project's installed (locked) dependencies for known vulnerabilities (issue 9,
# scenario 11). pip-audit is not a project dependency: it is installed into its own venv
# (default .cache/pip-audit-venv, override with PIP_AUDIT_VENV), never into .venv.
# The pins audited are exactly what .venv has installed (`pip freeze`, editable project
# excluded); the vulnerability data comes from PyPI's JSON API (pip-audit's default
# service, https://pypi.org/pypi/<name>/<version>/json `vulnerabilities`).
# Exit status: pip-audit's (0: none found, 1: vulnerabilities found); 2 if setup failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${PIP_AUDIT_VENV:-.cache/pip-audit-venv}"
if [[ ! -x "$venv/bin/pip-audit" ]]; then
    python3 -m venv "$venv" || exit 2
    "$venv/bin/pip" install --quiet --disable-pip-version-check pip-audit 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    [[ -x "$venv/bin/pip-audit" ]] || { echo "pip-audit could not be installed" >&2; exit 2; }
fi
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
.venv/bin/pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null \
    | grep -v '^-e ' > "$reqs"
echo "auditing $(wc -l < "$reqs") pinned packages from .venv" >&2
# --no-deps --disable-pip: audit these exact pins, do not resolve or install anything.
exec "$venv/bin/pip-audit" --requirement "$reqs" --no-deps --disable-pip \
    --vulnerability-service pypi --progress-spinner off "$@"

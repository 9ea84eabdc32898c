#!/usr/bin/env bash
# sekmet-fhir, the FHIR R4 server the adapter tests start (tests/support/fhir_server.py),
# in its own venv .venv-sekmet so that its dependencies never mix with the project's.
# Idempotent: a stamp naming the pinned version makes a rerun an instant no-op.
set -euo pipefail

SEKMET_VERSION="0.1.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv-sekmet"
STAMP="$VENV/.installed-sekmet-fhir-$SEKMET_VERSION"
PYTHON="${PYTHON:-python3}"

if [[ -f "$STAMP" && -x "$VENV/bin/sekmet" ]]; then
    exit 0
fi

echo "installing sekmet-fhir==$SEKMET_VERSION into $VENV"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "sekmet-fhir==$SEKMET_VERSION"

# The test server must stay small: no CUDA wheels may come in with it.
if "$VENV/bin/pip" list 2>/dev/null | grep -i nvidia; then
    echo "error: nvidia packages were installed into $VENV (see above)" >&2
    exit 1
fi
test -x "$VENV/bin/sekmet" || { echo "error: $VENV/bin/sekmet missing" >&2; exit 1; }

rm -f "$VENV"/.installed-sekmet-fhir-*
touch "$STAMP"
echo "sekmet-fhir $SEKMET_VERSION installed"

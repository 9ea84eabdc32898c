#!/usr/bin/env bash
# Debian's chromium, for the review page's browser tests (tests/compliance/
# test_review_browser.py): playwright-python drives this binary (executable_path,
# --headless --no-sandbox); `playwright install` and its downloaded browsers are never used.
#
# Idempotent: a quick no-op when the binary is already installed. Installing needs root
# (CI runs as root) or sudo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

CHROMIUM_BIN="${WARDROUND_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM_BIN" ]; then
    exit 0
fi

apt_root "install the Debian package chromium by hand (or set WARDROUND_CHROMIUM to a" \
    "Chromium binary)"
apt_install chromium

if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "$SCRIPT: installed, but $CHROMIUM_BIN is still missing" >&2
    exit 1
fi

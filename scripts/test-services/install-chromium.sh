#!/usr/bin/env bash
# Debian's chromium, for the review page's browser tests (tests/browser/): playwright-python
# drives this binary (executable_path, --headless --no-sandbox); `playwright install` and its
# downloaded browsers are never used.
#
# Idempotent: a quick no-op when the binary is already installed. Installing needs root
# (CI runs as root) or sudo.
set -euo pipefail

CHROMIUM_BIN="${WARDROUND_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM_BIN" ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-chromium.sh: $CHROMIUM_BIN is missing and this user is not root (no sudo" \
        "either): install the Debian package chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium.sh: apt-get not found; install Chromium by hand and set" \
        "WARDROUND_CHROMIUM to its binary" >&2
    exit 1
fi

echo "install-chromium.sh: installing chromium" >&2
# Another install may hold the dpkg lock (parallel CI jobs): wait for it instead of failing.
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium

if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "install-chromium.sh: installed, but $CHROMIUM_BIN is still missing" >&2
    exit 1
fi

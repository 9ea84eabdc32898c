# Sourced by install-orthanc.sh and install-chromium.sh: Debian packages, installed as root
# (CI runs as root) or with sudo.
#
#   apt_root "how to install by hand"   sets SUDO (empty as root), or exits 1 with the hint
#   apt_install PACKAGE...              apt-get update + install --no-install-recommends,
#                                       waiting for another install's dpkg lock
#
# SCRIPT (the caller's name) starts every message.

SCRIPT="$(basename "$0")"

apt_root() {
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "$SCRIPT: this user is not root (no sudo either): $*" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$SCRIPT: apt-get not found: $*" >&2
        exit 1
    fi
}

apt_install() {
    echo "$SCRIPT: installing $*" >&2
    # Another install may hold the dpkg lock (parallel CI jobs): wait for it instead of failing.
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
}

#!/usr/bin/env bash
# Orthanc and its DICOMweb plugin, from Debian/Ubuntu packages, for the imaging adapter tests
# (tests/support/dicomweb_server.py starts its own Orthanc process on a free port with a
# generated configuration; the packaged system service is never used).
#
# Idempotent: a quick no-op when both the binary and the plugin are already installed.
# Installing needs root (CI runs as root) or sudo. The packages' maintainer scripts would
# start the system service; a temporary policy-rc.d (exit 101 = "action forbidden") stops
# invoke-rc.d and deb-systemd-invoke from doing so.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

ORTHANC_BIN="${WARDROUND_ORTHANC:-/usr/sbin/Orthanc}"
DICOMWEB_PLUGIN="${WARDROUND_ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}"

installed() {
    [ -x "$ORTHANC_BIN" ] && [ -e "$DICOMWEB_PLUGIN" ]
}

if installed; then
    exit 0
fi

apt_root "install Orthanc 1.10+ and the DICOMweb plugin by hand (Debian packages orthanc" \
    "and orthanc-dicomweb; set WARDROUND_ORTHANC / WARDROUND_ORTHANC_DICOMWEB_PLUGIN)"

POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# install-orthanc.sh: no service starts during the install\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    created_policy=1
fi

apt_install orthanc orthanc-dicomweb

if ! installed; then
    echo "$SCRIPT: installed, but $ORTHANC_BIN or $DICOMWEB_PLUGIN is still missing" >&2
    exit 1
fi

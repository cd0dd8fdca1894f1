#!/bin/sh
# Buildroot post-build hook (BR2_ROOTFS_POST_BUILD_SCRIPT): $1 is the target root filesystem.
# Installs the unpacked bundle named by FACEGATE_BUNDLE (make bundle BOARD=rv1126, then untar).
set -eu
target_dir="$1"
bundle="${FACEGATE_BUNDLE:?set FACEGATE_BUNDLE to an unpacked FaceGate bundle (make bundle BOARD=rv1126)}"
"$bundle/install.sh" --root "$target_dir" --python "${FACEGATE_HOST_PYTHON:-python3}"

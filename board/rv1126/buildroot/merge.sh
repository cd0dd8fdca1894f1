#!/bin/sh
# Merge FaceGate into the Rockchip SDK's Buildroot .config: the fragment's symbols, then the
# FaceGate overlay and post-build script *appended* to the SDK's own (both are space-separated
# lists; a fragment that set them would drop the SDK's board overlay and scripts).
#   board/rv1126/buildroot/merge.sh SDK/buildroot/output/rockchip_rv1126_rv1109/.config
set -eu
config="${1:?usage: merge.sh PATH/TO/buildroot/.config}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
[ -f "$config" ] || { echo "merge.sh: no $config (run the SDK's defconfig first)" >&2; exit 2; }
buildroot="$(cd "$(dirname "$config")" && while [ ! -x support/kconfig/merge_config.sh ] && [ "$PWD" != / ]; do cd ..; done && pwd)"
if [ -x "$buildroot/support/kconfig/merge_config.sh" ]; then
	(cd "$buildroot" && KCONFIG_CONFIG="$config" support/kconfig/merge_config.sh -m "$config" "$here/facegate.fragment")
fi
append() {  # append VALUE to the list symbol NAME unless it is there already
	name="$1"
	value="$2"
	current="$(sed -n "s/^$name=\"\(.*\)\"$/\1/p" "$config")"
	case " $current " in
	*" $value "*) return 0 ;;
	esac
	grep -v "^$name=" "$config" > "$config.facegate" || true
	echo "$name=\"${current:+$current }$value\"" >> "$config.facegate"
	mv "$config.facegate" "$config"
}
append BR2_ROOTFS_OVERLAY "$repo/rootfs_overlay"
append BR2_ROOTFS_POST_BUILD_SCRIPT "$repo/board/rv1126/post-build.sh"
echo "merged FaceGate into $config (overlay and post-build script appended to the SDK's)"

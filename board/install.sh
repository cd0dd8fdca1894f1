#!/bin/sh
# Install an unpacked FaceGate bundle: on the board (as root: `./install.sh`), or into a root
# filesystem being built (`./install.sh --root DIR`, as board/<board>/post-build.sh does).
# `--stage` only lays the version out beside the others and prints its folder: `facegate update`
# uses it, then self-tests that version, switches to it and falls back if it fails.
#
# Versions live side by side in /usr/lib/facegate/versions/VERSION-ID (ID: the bundle's manifest
# hash), each with its packages, models and manifest; `current` and `previous` are symlinks,
# replaced atomically (rename), so a power cut leaves one whole version or the other. The
# launcher /usr/bin/facegate and the config stay outside: an update changes neither.
# A site's existing /etc/facegate/config.toml is kept; the bundle's lands beside it as .new.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
python="python3"
stage_only=""
while [ $# -gt 0 ]; do
	case "$1" in
	--root)
		root="$2"
		shift 2
		;;
	--python)
		python="$2"
		shift 2
		;;
	--stage)
		stage_only=yes
		shift
		;;
	*)
		echo "usage: $0 [--root DIR] [--python PYTHON] [--stage]" >&2
		exit 1
		;;
	esac
done

cd "$here"
if ! sha256sum -c SHA256SUMS >/dev/null; then
	echo "install.sh: the bundle is damaged (a file does not match SHA256SUMS); copy it again" >&2
	exit 2
fi

# the board's facts: PYTHON and WHEEL_PLATFORMS when the bundle carries compiled packages
# shellcheck source=/dev/null
. ./meta
# into a root being built on another machine, pip must take the board's wheels, not its own
cross=""
if [ -n "$root" ] && [ -z "$stage_only" ] && [ -n "${PYTHON:-}" ]; then
	cross="--only-binary=:all: --implementation cp --python-version $PYTHON"
	cross="$cross --abi cp$(echo "$PYTHON" | tr -d .) --abi abi3 --abi none"
	for platform in ${WHEEL_PLATFORMS:-}; do
		cross="$cross --platform $platform"
	done
fi

lib="$root/usr/lib/facegate"
version=$(sed -n 's/.*"version": "\(.*\)".*/\1/p' MANIFEST.json | head -n 1)
name="$version-$(sha256sum MANIFEST.json | cut -c1-8)"
staged="$lib/versions/$name"

# replace symlink $1 by one to $2 in one rename: a reader (or a power cut) sees the old or the new
relink() {
	rm -f "$1.new"
	ln -s "$2" "$1.new"
	"$python" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$1.new" "$1"
}

# the version, laid out under a temporary name and renamed whole once every file is written
if [ ! -f "$staged/.complete" ]; then
	mkdir -p "$lib/versions"
	rm -rf "$staged.partial"
	mkdir "$staged.partial"
	# code: the wheels into the version's own folder, so the image's Python packages stay untouched
	# shellcheck disable=SC2086 # $cross is a list of options
	"$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --upgrade $cross \
		--target "$staged.partial/python" wheelhouse/*.whl
	cp -R models "$staged.partial/models"
	cp -R overlay "$staged.partial/overlay"
	cp MANIFEST.json meta install.sh "$staged.partial/"
	echo "$name" >"$staged.partial/.complete"
	sync
	rm -rf "$staged"
	mv "$staged.partial" "$staged"
	sync
fi
if [ -n "$stage_only" ]; then
	echo "$staged"
	exit 0
fi

# the launcher, outside every version: it runs `current`, and while an update is on trial it
# counts the service's starts and goes back to `previous` after three that never proved it
mkdir -p "$root/usr/bin"
cp launcher "$root/usr/bin/facegate"
chmod 755 "$root/usr/bin/facegate"
# an install from before versions existed: its code and models go (the data and config stay)
if [ -d "$lib/python" ]; then
	rm -rf "$lib/python"
fi
mkdir -p "$root/usr/share/facegate"
if [ ! -L "$root/usr/share/facegate/models" ]; then
	rm -rf "$root/usr/share/facegate/models"
	ln -s ../../lib/facegate/current/models "$root/usr/share/facegate/models"
fi
old=""
if [ -L "$lib/current" ]; then
	old=$(readlink "$lib/current")
fi

# the overlay, keeping a site's config
config="$root/etc/facegate/config.toml"
kept=""
if [ -f "$config" ] && ! cmp -s "$config" overlay/etc/facegate/config.toml; then
	cp "$config" "$config.site"
	kept=yes
fi
cp -R overlay/. "$root/"
if [ -n "$kept" ]; then
	mv "$config" "$config.new"
	mv "$config.site" "$config"
	echo "kept the site's $config; the bundle's is $config.new"
fi
chmod 755 "$root/etc/init.d/S95facegate"

switch_now() {
	if [ "$old" != "versions/$name" ]; then
		if [ -n "$old" ] && [ -d "$lib/$old" ]; then
			relink "$lib/previous" "$old"
		fi
		relink "$lib/current" "versions/$name"
	fi
	rm -f "$lib/trial" "$lib/fallback" "$lib/rolled-back"
	sync
}

if [ -n "$root" ]; then
	switch_now # an image being built: nothing runs yet
else
	# on the board: the door stays locked and stopped unless this device can really run it
	new() {
		PYTHONPATH="$staged/python" "$python" -c \
			'import sys; del sys.path[0]; from appliance.cli import main; sys.exit(main())' "$@"
	}
	# this door's own signing key, made here and never copied anywhere (an old shared site key
	# is replaced); the line it prints goes to the administrator's 'facegate admin add-door'
	if ! new keys init --config /etc/facegate/config.toml; then
		echo "install.sh: could not make this door's signing key (see above)" >&2
		exit 1
	fi
	# the web page's certificate, made here once (kept across updates; the site may install its own);
	# its fingerprint is printed for the installer to compare with what the phone's browser shows
	if ! new web cert --config /etc/facegate/config.toml; then
		echo "install.sh: could not make the web page's certificate (see above)" >&2
		exit 1
	fi
	if [ -n "$old" ] && [ "$old" != "versions/$name" ] && [ -d "$lib/$old" ]; then
		# a version runs here already: the new one is self-tested, switched to, and left again
		# by itself if its door does not run (what 'facegate update' does)
		if ! new update "$here" --config /etc/facegate/config.toml; then
			echo "install.sh: the update did not take (see above)" >&2
			exit 1
		fi
		echo "installed $name into /"
		exit 0
	fi
	systemd=""
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemd=yes
		systemctl stop facegate.service 2>/dev/null || true
	else
		/etc/init.d/S95facegate stop
	fi
	switch_now
	if ! /usr/bin/facegate selftest --config /etc/facegate/config.toml; then
		echo "install.sh: the self-test failed (see above): FaceGate is installed but its service is not started" >&2
		exit 1
	fi
	if [ -n "$systemd" ]; then
		systemctl daemon-reload
		systemctl enable facegate.service
		systemctl restart facegate.service
	elif ! /etc/init.d/S95facegate start; then
		echo "install.sh: the door service did not start (see above)" >&2
		exit 1
	fi
fi
echo "installed $name into ${root:-/}"

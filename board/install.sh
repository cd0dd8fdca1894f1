#!/bin/sh
# Install an unpacked FaceGate bundle: on the board (as root: `./install.sh`), or into a root
# filesystem being built (`./install.sh --root DIR`, as board/<board>/post-build.sh does).
# A site's existing /etc/facegate/config.toml is kept; the bundle's lands beside it as .new.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
python="python3"
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
	*)
		echo "usage: $0 [--root DIR] [--python PYTHON]" >&2
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
if [ -n "$root" ] && [ -n "${PYTHON:-}" ]; then
	cross="--only-binary=:all: --implementation cp --python-version $PYTHON"
	cross="$cross --abi cp$(echo "$PYTHON" | tr -d .) --abi abi3 --abi none"
	for platform in ${WHEEL_PLATFORMS:-}; do
		cross="$cross --platform $platform"
	done
fi

# code: the wheels into a private folder, so the image's own Python packages stay untouched
mkdir -p "$root/usr/lib/facegate"
# shellcheck disable=SC2086 # $cross is a list of options
"$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --upgrade $cross \
	--target "$root/usr/lib/facegate/python" wheelhouse/*.whl
mkdir -p "$root/usr/bin"
cat >"$root/usr/bin/facegate" <<'LAUNCHER'
#!/bin/sh
# FaceGate's packages live apart from the image's: /usr/lib/facegate/python
lib="$(cd "$(dirname "$0")/.." && pwd)/lib/facegate/python"
PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}" exec "${FACEGATE_PYTHON:-python3}" -m appliance "$@"
LAUNCHER
chmod 755 "$root/usr/bin/facegate"

# models
mkdir -p "$root/usr/share/facegate"
rm -rf "$root/usr/share/facegate/models"
cp -R models "$root/usr/share/facegate/models"

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

if [ -z "$root" ]; then
	# on the board: the door stays locked and stopped unless this device can really run it
	systemd=""
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemd=yes
		systemctl stop facegate.service 2>/dev/null || true
	else
		/etc/init.d/S95facegate stop
	fi
	# this door's own signing key, made here and never copied anywhere (an old shared site key
	# is replaced); the line it prints goes to the administrator's 'facegate admin add-door'
	if ! /usr/bin/facegate keys init --config /etc/facegate/config.toml; then
		echo "install.sh: could not make this door's signing key (see above)" >&2
		exit 1
	fi
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
echo "installed $(sed -n 's/.*"version": "\(.*\)".*/\1/p' MANIFEST.json | head -n 1) into ${root:-/}"

#!/usr/bin/env bash
# Builds a minimal Debian root with systemd (for booting in systemd-nspawn) into a tarball in a cache outside the
# repo, keyed by suite, package list and this script's layout version, so only the first run pays debootstrap
# (about 1-2 minutes). A no-op when the tarball for the current key is there. Prints the tarball's path.
#
#   tests/tools/build-nspawn-root.sh
#
# man-db lets `systemd-analyze verify` check the unit's Documentation=man:ambient-agent(8); busybox gives
# the two-host test an HTTP server and client (httpd, wget).
#
# Env: AMBIENT_TOOLS_CACHE (default $HOME/.cache/ambient-agent), NSPAWN_SUITE (default bookworm),
#      DEBIAN_MIRROR (default: the Debian mirror in /etc/apt/sources.list*, else http://deb.debian.org/debian).
#
# The root is made for the package tests (tests/packaging): its apt sources are only a local repository at
# file:/repo (bind-mounted by the test), so apt-get update inside never reaches for the network.
set -euo pipefail

suite="${NSPAWN_SUITE:-bookworm}"
cache="${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}"
# Bump layout when the customisation below changes.
layout=1
packages=(systemd systemd-sysv dbus iproute2 nftables init-system-helpers man-db busybox iperf3)

key="$(printf '%s\n' "$suite" "$layout" "${packages[@]}" | sha256sum | cut -c1-12)"
tarball="$cache/nspawn-root-$suite-$key.tar"

if [[ -s "$tarball" ]]; then
	touch "$tarball" # in use: see the clean-up below
	echo "$tarball"
	exit 0
fi

for tool in debootstrap tar; do
	if ! command -v "$tool" >/dev/null; then
		echo "build-nspawn-root: $tool is missing (apt-get install -y debootstrap)" >&2
		exit 1
	fi
done
if [[ $EUID -ne 0 ]]; then
	echo "build-nspawn-root: must run as root (debootstrap)" >&2
	exit 1
fi

mkdir -p "$cache"
# One builder at a time: a second caller waits for the first and then finds the tarball.
exec 9>"$cache/.nspawn-root.lock"
flock 9
if [[ -s "$tarball" ]]; then
	echo "$tarball"
	exit 0
fi

mirror() {
	if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
		echo "$DEBIAN_MIRROR"
		return
	fi
	local m
	# deb822 (URIs: ...) and one-line (deb URL suite ...) sources; the first plain Debian archive wins.
	m="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]]*$/\1/p' | head -n1)"
	if [[ -z "$m" ]]; then
		m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\2/p' | head -n1)"
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

work="$(mktemp -d "$cache/nspawn-root.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

start=$SECONDS
src="$(mirror)"
echo "build-nspawn-root: debootstrap $suite from $src (packages: ${packages[*]})" >&2
if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$root" "$src" \
	>"$work/debootstrap.log" 2>&1; then
	tail -n 40 "$work/debootstrap.log" >&2
	[[ -f "$root/debootstrap/debootstrap.log" ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
	echo "build-nspawn-root: debootstrap failed" >&2
	exit 1
fi

# apt inside the container sees only the test's local repository.
: >"$root/etc/apt/sources.list"
echo 'deb [trusted=yes] file:/repo ./' >"$root/etc/apt/sources.list.d/ambient-local.list"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
echo ambient-test >"$root/etc/hostname"
# A machine id is made at first boot; an empty file lets every boot of the overlay get its own.
: >"$root/etc/machine-id"

tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf "$work/root.tar" .
mv "$work/root.tar" "$tarball"
# Tarballs of other keys may belong to other checkouts sharing this cache: remove only those unused for a week.
find "$cache" -maxdepth 1 -name "nspawn-root-$suite-*.tar" ! -name "${tarball##*/}" -mtime +7 -delete
echo "build-nspawn-root: built $tarball in $((SECONDS - start))s" >&2
echo "$tarball"

#!/usr/bin/env bash
# Installs ambient-agent from this unpacked release tarball onto a systemd host, as root:
#
#   sudo ./install.sh
#
# Installs the same files as the .deb/.rpm, under /usr/local and /etc:
#   /usr/local/bin/ambient-agent                     the agent
#   /etc/systemd/system/ambient-agent.service        the unit (enabled, not started)
#   /etc/systemd/system/ambient-agent-close.service  closes the host from boot until the agent runs
#   /etc/sysusers.d/ambient-agent.conf, /etc/tmpfiles.d/ambient-agent.conf   its user and directories
#   /etc/ambient-agent/config.toml                   only if there is none: yours is never replaced
#   /usr/local/lib/ambient-agent/uninstall.sh        to remove it again
#   /usr/local/share/man/man8/ambient-agent.8.gz, /usr/local/share/doc/ambient-agent/
#   /usr/local/share/{bash-completion/completions,zsh/site-functions,fish/vendor_completions.d}/   shell completion
# Running it again is safe: it puts the same files in place and restarts the agent if it was running.
# Checks first: root, systemd running as init, this machine's architecture, kernel nftables support.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
unit=ambient-agent.service
# Closes the host from early boot until the agent runs; enabled with the agent (its Also=).
close_unit=ambient-agent-close.service
bin=/usr/local/bin/ambient-agent
libdir=/usr/local/lib/ambient-agent

say() { echo "install: $*"; }
die() {
	echo "install: error: $*" >&2
	exit 1
}

case "${1:-}" in
"") ;;
-h | --help)
	sed -n 's/^# \{0,1\}//; 2,/^set -euo/p' "$0" | sed '$d'
	exit 0
	;;
*) die "unknown argument '$1' (usage: ./install.sh)" ;;
esac

[[ -f "$here/MANIFEST" ]] || die "$here/MANIFEST is missing: run install.sh from an unpacked release tarball"
VERSION="" ARCH=""
# shellcheck source=/dev/null
source "$here/MANIFEST"
[[ -n "$VERSION" && -n "$ARCH" ]] || die "$here/MANIFEST does not name VERSION and ARCH"

preflight() {
	[[ $EUID -eq 0 ]] || die "run as root (sudo ./install.sh)"

	local machine want
	machine="$(uname -m)"
	case "$machine" in
	x86_64 | amd64) want=amd64 ;;
	aarch64 | arm64) want=arm64 ;;
	*) want="$machine" ;;
	esac
	[[ "$want" == "$ARCH" ]] ||
		die "this tarball is for $ARCH but this machine is $machine ($want): download ambient-agent_${VERSION}_linux_${want}.tar.gz"

	[[ -d /run/systemd/system ]] && command -v systemctl >/dev/null ||
		die "systemd is not running as init here: the agent is installed as a systemd service (run it by hand with: ambient-agent run -config FILE)"
	command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null ||
		die "systemd-sysusers or systemd-tmpfiles is missing: systemd is too old or incomplete"

	if dpkg-query -W -f='${Status}' ambient-agent 2>/dev/null | grep -q 'install ok installed' ||
		rpm -q ambient-agent >/dev/null 2>&1; then
		die "ambient-agent is installed from a package here: upgrade it with apt or dnf, or remove the package first"
	fi

	nftables_ok || die "the kernel's nftables (nf_tables) cannot be used here: the agent needs it to capture traffic. Load it (modprobe nf_tables) or use a kernel built with CONFIG_NF_TABLES and CONFIG_NFT_REDIRECT"
	say "preflight ok: $ARCH, systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), nftables"
}

# A read-only question to the kernel: the nft CLI if there is one, else the agent's own doctor check.
nftables_ok() {
	if command -v nft >/dev/null && nft list tables >/dev/null 2>&1; then
		return 0
	fi
	"$here/ambient-agent" doctor 2>/dev/null | grep -q '^\[OK *\] kernel nftables'
}

# install_file MODE SRC DST: copy next to DST, then rename over it, so a running reader never sees half a file.
install_file() {
	local mode="$1" src="$2" dst="$3"
	install -d -m 0755 "$(dirname "$dst")"
	install -m "$mode" "$src" "$dst.new"
	mv -f "$dst.new" "$dst"
}

install_files() {
	install_file 0755 "$here/ambient-agent" "$bin"
	local unit_tmp
	unit_tmp="$(mktemp)"
	for u in "$unit" "$close_unit"; do
		sed "s|/usr/bin/ambient-agent|$bin|g" "$here/systemd/$u" >"$unit_tmp"
		install_file 0644 "$unit_tmp" "/etc/systemd/system/$u"
	done
	rm -f "$unit_tmp"
	install_file 0644 "$here/systemd/ambient-agent.sysusers" /etc/sysusers.d/ambient-agent.conf
	install_file 0644 "$here/systemd/ambient-agent.tmpfiles" /etc/tmpfiles.d/ambient-agent.conf
	install_file 0755 "$here/uninstall.sh" "$libdir/uninstall.sh"
	printf 'VERSION=%s\nARCH=%s\n' "$VERSION" "$ARCH" >"$libdir/MANIFEST"
	install_file 0644 "$here/doc/ambient-agent.8.gz" /usr/local/share/man/man8/ambient-agent.8.gz
	install_file 0644 "$here/doc/copyright" /usr/local/share/doc/ambient-agent/copyright
	install_file 0644 "$here/doc/install.md" /usr/local/share/doc/ambient-agent/install.md
	install_file 0644 "$here/completion/ambient-agent.bash" /usr/local/share/bash-completion/completions/ambient-agent
	install_file 0644 "$here/completion/_ambient-agent" /usr/local/share/zsh/site-functions/_ambient-agent
	install_file 0644 "$here/completion/ambient-agent.fish" /usr/local/share/fish/vendor_completions.d/ambient-agent.fish

	install -d -m 0755 /etc/ambient-agent
	if [[ -e /etc/ambient-agent/config.toml ]]; then
		say "kept your /etc/ambient-agent/config.toml (the shipped one is in $libdir/config.toml.dist)"
	else
		install -m 0644 "$here/config.toml" /etc/ambient-agent/config.toml
		say "wrote the default /etc/ambient-agent/config.toml"
	fi
	install_file 0644 "$here/config.toml" "$libdir/config.toml.dist"
}

preflight
was_active=no
systemctl is-active --quiet "$unit" && was_active=yes

install_files
systemd-sysusers ambient-agent.conf
systemd-tmpfiles --create ambient-agent.conf
systemctl daemon-reload
systemctl enable --quiet "$unit"
say "installed ambient-agent $VERSION ($("$bin" version)) into $bin; $unit is enabled"

if [[ $was_active == yes ]]; then
	systemctl restart "$unit" ||
		die "the files are installed but the agent did not restart: see systemctl status ambient-agent and journalctl -u ambient-agent"
	say "restarted the running agent"
else
	say "not started. Write /etc/ambient-agent/config.toml, check it with: ambient-agent validate"
	say "then: systemctl enable --now ambient-agent"
fi
say "to remove it: $libdir/uninstall.sh (add --purge to delete the configuration too)"

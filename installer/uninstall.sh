#!/usr/bin/env bash
# Removes an ambient-agent installed by install.sh, as root:
#
#   sudo /usr/local/lib/ambient-agent/uninstall.sh [--purge]
#
# Stops and disables the service (its ExecStopPost removes the nftables table), removes the table in any
# case, and deletes the installed files. Keeps /etc/ambient-agent (configuration, certificates and keys)
# unless --purge, which also deletes it and /var/lib/ambient-agent. The system user ambient-agent stays,
# as packages leave system users: files it owned may still exist. Running it again is safe.
set -euo pipefail

unit=ambient-agent.service
close_unit=ambient-agent-close.service
bin=/usr/local/bin/ambient-agent
libdir=/usr/local/lib/ambient-agent

say() { echo "uninstall: $*"; }
die() {
	echo "uninstall: error: $*" >&2
	exit 1
}

purge=no
case "${1:-}" in
"") ;;
--purge) purge=yes ;;
-h | --help)
	sed -n 's/^# \{0,1\}//; 2,/^set -euo/p' "$0" | sed '$d'
	exit 0
	;;
*) die "unknown argument '$1' (usage: uninstall.sh [--purge])" ;;
esac
[[ $EUID -eq 0 ]] || die "run as root"

if [[ -e "/etc/systemd/system/$unit" ]] && [[ -d /run/systemd/system ]]; then
	# A stop job: the agent's ExecStopPost removes the table (the host opens).
	systemctl disable --now --quiet "$unit" "$close_unit" || say "warning: stopping $unit failed; removing the table by hand"
	say "stopped and disabled $unit"
fi
if [[ -x "$bin" ]]; then
	"$bin" cleanup >/dev/null ||
		say "warning: could not remove the nftables table inet ambient_agent; remove it with: nft delete table inet ambient_agent"
fi

rm -f "$bin" "/etc/systemd/system/$unit" "/etc/systemd/system/$close_unit" /etc/sysusers.d/ambient-agent.conf /etc/tmpfiles.d/ambient-agent.conf \
	/usr/local/share/man/man8/ambient-agent.8.gz /usr/local/share/bash-completion/completions/ambient-agent \
	/usr/local/share/zsh/site-functions/_ambient-agent /usr/local/share/fish/vendor_completions.d/ambient-agent.fish
rm -rf /usr/local/share/doc/ambient-agent "$libdir"
if [[ -d /run/systemd/system ]]; then
	systemctl daemon-reload
	systemctl reset-failed "$unit" 2>/dev/null || true
fi
say "removed the ambient-agent files"

if [[ $purge == yes ]]; then
	rm -rf /etc/ambient-agent /var/lib/ambient-agent /run/ambient-agent
	say "purged /etc/ambient-agent and /var/lib/ambient-agent"
else
	say "kept /etc/ambient-agent (configuration, certificates, keys); delete it with --purge"
fi

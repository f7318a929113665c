#!/usr/bin/env bash
# Lints built packages: lintian for .deb, rpmlint for .rpm. Exits non-zero if either reports an error;
# warnings are printed and do not fail.
#
#   packaging/lint.sh dist/*.deb dist/*.rpm
#
# rpmlint unpacks an rpm with `rpm2cpio | cpio -id` in a temporary directory, but nfpm writes absolute
# paths into the payload, so a plain cpio would unpack into / (as root: over the real /usr/bin and /etc).
# A cpio shim first in PATH adds --no-absolute-filenames.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
[[ $# -gt 0 ]] || { sed -n 's/^#   //p' "$0" >&2; exit 2; }

shim="$(mktemp -d)"
trap 'rm -rf "$shim"' EXIT
if cpio="$(command -v cpio)"; then
	printf '#!/bin/sh\nexec %s --no-absolute-filenames "$@"\n' "$cpio" >"$shim/cpio"
	chmod +x "$shim/cpio"
fi

status=0
for pkg in "$@"; do
	case "$pkg" in
	*.deb)
		echo "lint: lintian $pkg"
		# Exit status: 0 clean or warnings only, 1 errors (tags of severity error), 2 lintian failed.
		lintian --pedantic --display-info "$pkg" || status=1
		;;
	*.rpm)
		echo "lint: rpmlint $pkg"
		[[ -x "$shim/cpio" ]] || { echo "lint: cpio is missing (apt-get install rpmlint pulls it in)" >&2; exit 1; }
		PATH="$shim:$PATH" rpmlint --config "$here/rpmlint.toml" "$pkg" || status=1
		;;
	*)
		echo "lint: not a .deb or .rpm: $pkg" >&2
		status=2
		;;
	esac
done
exit "$status"

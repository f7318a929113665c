#!/usr/bin/env bash
# Prints the package version of this checkout, valid for dpkg and rpm alike (no '-'):
#   on tag v1.2.3             -> 1.2.3
#   5 commits after v1.2.3    -> 1.2.3+git5.gabc1234
#   no release tag yet        -> 0.0.0~git20261122093000.abc1234  (commit time; '~' sorts before 0.0.0)
# PKG_VERSION in the environment wins.
set -euo pipefail

if [[ -n "${PKG_VERSION:-}" ]]; then
	echo "$PKG_VERSION"
	exit 0
fi
cd "$(dirname "$0")/.."
if desc="$(git describe --tags --match 'v[0-9]*' --abbrev=7 2>/dev/null)"; then
	desc="${desc#v}"
	# 1.2.3-5-gabc1234 -> 1.2.3+git5.gabc1234
	if [[ "$desc" =~ ^(.*)-([0-9]+)-(g[0-9a-f]+)$ ]]; then
		desc="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
	fi
	echo "${desc//-/\~}"
	exit 0
fi
if when="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S 2>/dev/null)" &&
	sha="$(git rev-parse --short=7 HEAD 2>/dev/null)"; then
	echo "0.0.0~git$when.$sha"
	exit 0
fi
echo "0.0.0~dev"

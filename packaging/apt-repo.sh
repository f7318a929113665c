#!/usr/bin/env bash
# Makes (or updates) a flat, file-based apt repository: copies the given .deb files into DIR and writes
# DIR/Packages.gz. Every version stays in the index, so apt can upgrade and downgrade among them.
#
#   packaging/apt-repo.sh DIR file.deb...
#
# Use it on a host with:
#   echo 'deb [trusted=yes] file:/path/to/DIR ./' >/etc/apt/sources.list.d/ambient-agent.list
#   apt-get update && apt-get install ambient-agent
# [trusted=yes] because the repository is not signed: for local testing only.
set -euo pipefail

[[ $# -ge 2 ]] || { sed -n 's/^#   //p' "$0" >&2; exit 2; }
command -v dpkg-scanpackages >/dev/null || { echo "apt-repo: dpkg-scanpackages is missing (apt-get install dpkg-dev)" >&2; exit 1; }
dir="$1"
shift
mkdir -p "$dir"
for deb in "$@"; do
	[[ "$deb" == *.deb && -f "$deb" ]] || { echo "apt-repo: not a .deb file: $deb" >&2; exit 1; }
	cp -f "$deb" "$dir/"
done
cd "$dir"
dpkg-scanpackages --multiversion . /dev/null 2>/dev/null | gzip -9c >Packages.gz.new
mv Packages.gz.new Packages.gz
echo "apt-repo: $(zcat Packages.gz | grep -c '^Package:') package(s) in $(pwd)"

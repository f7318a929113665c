#!/usr/bin/env bash
# Builds spire-server and spire-agent from the Go module proxy into a cache outside the repo, keyed by version,
# so only the first run pays the cold build (about 10 minutes on 2 cores). A no-op when both binaries are there.
#
#   tests/tools/build-spire.sh            # prints the bin directory on stdout
#
# Env: SPIRE_VERSION (default v1.13.3), AMBIENT_TOOLS_CACHE (default $HOME/.cache/ambient-agent),
#      SPIRE_BIN_DIR (default $AMBIENT_TOOLS_CACHE/spire-$SPIRE_VERSION/bin).
#
# `go install github.com/spiffe/spire/cmd/...@v1.13.3` does not work behind our module proxy (it refuses the
# version list), so: download the module, copy its source out of the read-only module cache, build there.
set -euo pipefail

version="${SPIRE_VERSION:-v1.13.3}"
cache="${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}"
bin="${SPIRE_BIN_DIR:-$cache/spire-$version/bin}"

have() { [[ -x "$bin/spire-server" && -x "$bin/spire-agent" ]]; }

if have; then
	echo "$bin"
	exit 0
fi

mkdir -p "$(dirname "$bin")"
# One builder at a time: a second caller waits for the first and then finds the binaries.
exec 9>"$(dirname "$bin")/.build.lock"
flock 9
if have; then
	echo "$bin"
	exit 0
fi

work="$(mktemp -d "$(dirname "$bin")/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

start=$SECONDS
echo "build-spire: downloading github.com/spiffe/spire@$version" >&2
dir="$(cd "$work" && go mod download -json "github.com/spiffe/spire@$version" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$dir" || ! -d "$dir" ]]; then
	echo "build-spire: go mod download did not report a source directory" >&2
	exit 1
fi
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"

echo "build-spire: building spire-server and spire-agent (slow the first time)" >&2
(
	cd "$work/src"
	export GOFLAGS=-buildvcs=false GOWORK=off
	go mod download
	mkdir -p "$work/bin"
	go build -o "$work/bin/" ./cmd/spire-server ./cmd/spire-agent
)
"$work/bin/spire-server" --version >/dev/null 2>&1 || true

mkdir -p "$bin"
# Move each binary into place atomically so a concurrent reader never sees a half-written file.
for b in spire-server spire-agent; do
	mv "$work/bin/$b" "$bin/.$b.tmp"
	mv "$bin/.$b.tmp" "$bin/$b"
done
echo "build-spire: built $version in $((SECONDS - start))s into $bin" >&2
echo "$bin"

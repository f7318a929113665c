#!/usr/bin/env bash
# Builds the release artifacts of ambient-agent into an output directory:
#   deb      ambient-agent_<version>-<release>_<arch>.deb  (nfpm)
#   rpm      ambient-agent_<version>-<release>_<arch>.rpm  (nfpm)
#   tarball  ambient-agent_<version>_linux_<arch>.tar.gz (installer/install.sh inside)
#
#   packaging/build.sh [-v VERSION] [-a "amd64 arm64"] [-o dist] deb rpm tarball
#
# <version> comes from packaging/version.sh (or -v), <release> is the packaging revision (PKG_RELEASE, default 1).
# The binary is static (CGO_ENABLED=0), cross-compiled per architecture. nfpm v2.45.2 is installed once
# into the tools cache (AMBIENT_TOOLS_CACHE, default $HOME/.cache/ambient-agent); NFPM overrides it.
set -euo pipefail

nfpm_version=v2.45.2
root="$(cd "$(dirname "$0")/.." && pwd)"
version=""
archs="amd64 arm64"
out="$root/dist"

usage() {
	sed -n 's/^#   //p' "$0" >&2
	exit 2
}
while getopts "v:a:o:h" opt; do
	case "$opt" in
	v) version="$OPTARG" ;;
	a) archs="$OPTARG" ;;
	o) out="$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] || usage
formats=("$@")
for f in "${formats[@]}"; do
	case "$f" in
	deb | rpm | tarball) ;;
	*) echo "build: unknown format '$f' (want deb, rpm or tarball)" >&2; exit 2 ;;
	esac
done
for a in $archs; do
	case "$a" in
	amd64 | arm64) ;;
	*) echo "build: unsupported architecture '$a' (want amd64 or arm64)" >&2; exit 2 ;;
	esac
done

version="${version:-$("$root/packaging/version.sh")}"
release="${PKG_RELEASE:-1}"
if [[ ! "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "build: version '$version' is not usable by dpkg and rpm (digits first, then letters, digits, . + ~)" >&2
	exit 2
fi
if [[ ! "$release" =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "build: PKG_RELEASE '$release' is not a valid revision" >&2
	exit 2
fi

GO="${GO:-go}"
cache="${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}"

# nfpm, built once per version into the cache (go install needs no go.mod of ours).
nfpm_bin() {
	if [[ -n "${NFPM:-}" ]]; then
		echo "$NFPM"
		return
	fi
	local dir="$cache/nfpm-$nfpm_version"
	if [[ ! -x "$dir/nfpm" ]]; then
		mkdir -p "$dir"
		(
			flock 9
			if [[ ! -x "$dir/nfpm" ]]; then
				echo "build: installing nfpm $nfpm_version into $dir (once)" >&2
				GOBIN="$dir" GOFLAGS=-mod=mod "$GO" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version" >&2
			fi
		) 9>"$dir/.lock"
	fi
	echo "$dir/nfpm"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# A one-entry changelog for this build (nfpm writes it as changelog.Debian.gz and into the rpm header).
commit="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
cat >"$work/changelog.yaml" <<YAML
- semver: "$version-$release"
  date: "$(TZ=UTC git -C "$root" log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
  packager: "The ambient-agent Authors <ambient-agent@users.noreply.github.com>"
  deb:
    urgency: medium
    distributions: [stable]
  changes:
    - note: "Upstream release $version, built from commit $commit."
YAML
gzip -9n <"$root/packaging/ambient-agent.8" >"$work/ambient-agent.8.gz"
gzip -9n <"$root/docs/install.md" >"$work/install.md.gz"

for arch in $archs; do
	stage="$work/$arch"
	mkdir -p "$stage"
	cp "$work/changelog.yaml" "$work/ambient-agent.8.gz" "$work/install.md.gz" "$stage/"
	# nfpm.yaml names its sources relative to the stage.
	for d in systemd conf packaging docs; do ln -s "$root/$d" "$stage/$d"; done
	echo "build: ambient-agent $version linux/$arch" >&2
	step=$SECONDS
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "$GO" build -trimpath -buildmode=pie \
		-ldflags "-s -w -X github.com/ambient-agent/ambient-agent/agent/internal/app.Version=$version" \
		-o "$stage/ambient-agent" ./agent/cmd/ambient-agent)
	echo "build: compiled linux/$arch in $((SECONDS - step))s" >&2

	for f in "${formats[@]}"; do
		case "$f" in
		deb | rpm)
			target="$out/ambient-agent_${version}-${release}_${arch}.$f"
			nfpm="$(nfpm_bin)"
			(cd "$stage" && PKG_VERSION="$version" PKG_RELEASE="$release" PKG_ARCH="$arch" \
				"$nfpm" package --config packaging/nfpm.yaml --packager "$f" --target "$target" >&2)
			;;
		tarball)
			target="$out/ambient-agent_${version}_linux_${arch}.tar.gz"
			name="ambient-agent_${version}_linux_${arch}"
			tdir="$work/tar-$arch/$name"
			mkdir -p "$tdir/systemd" "$tdir/doc" "$tdir/completion"
			install -m 0755 "$stage/ambient-agent" "$root/installer/install.sh" "$root/installer/uninstall.sh" "$tdir/"
			install -m 0644 "$root/systemd/ambient-agent.service" "$root/systemd/ambient-agent-close.service" \
				"$root/systemd/ambient-agent.sysusers" \
				"$root/systemd/ambient-agent.tmpfiles" "$tdir/systemd/"
			install -m 0644 "$root/conf/config.toml" "$tdir/config.toml"
			install -m 0644 "$stage/ambient-agent.8.gz" "$root/packaging/copyright" "$root/docs/install.md" "$tdir/doc/"
			install -m 0644 "$root"/packaging/completion/* "$tdir/completion/"
			printf 'VERSION=%s\nARCH=%s\n' "$version" "$arch" >"$tdir/MANIFEST"
			tar --owner=0 --group=0 --numeric-owner --sort=name -C "$work/tar-$arch" -czf "$target.tmp" "$name"
			mv "$target.tmp" "$target"
			;;
		esac
		echo "build: wrote $target (${SECONDS}s since start)" >&2
		echo "$target"
	done
done

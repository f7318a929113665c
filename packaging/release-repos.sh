#!/usr/bin/env bash
# Builds signed release repositories from built packages, with the operator's OpenPGP key:
#   OUT/apt/       an apt repository: pool/, dists/stable/{InRelease,Release,Release.gpg}, main/binary-<arch>/Packages
#   OUT/rpm/       a dnf/yum repository of signed rpms: repodata/repomd.xml and its signature repomd.xml.asc
#   OUT/tarball/   the tarballs with SHA256SUMS and SHA256SUMS.asc (detached signature)
#   OUT/ambient-agent-archive-keyring.gpg   the public key (binary), as apt's signed-by and dnf's gpgkey want it
#   OUT/ambient-agent-archive-keyring.asc   the same, armored
#   OUT/ambient-agent.repo                  a dnf .repo file for the rpm repository (edit baseurl)
#   OUT/keyring/                            the keyring packages as built, before the rpm repository signs its copy
# The key also ships as a package in both repositories, so that a rotation reaches hosts through them:
# ambient-agent-archive-keyring (deb: /usr/share/keyrings/ambient-agent-archive-keyring.gpg; rpm:
# /etc/pki/rpm-gpg/ambient-agent-archive-keyring.asc), built with nfpm ($NFPM, or the one packaging/build.sh installed).
#
#   packaging/release-repos.sh -k KEY [-o OUT] [-u BASEURL] FILE.deb|FILE.rpm|FILE.tar.gz...
#
# KEY is the signing key's id or fingerprint in $GNUPGHOME (or gpg's default home): the secret key must be there and
# usable without a prompt (an agent holding the passphrase, or none). Nothing is signed with any other key. The rpms
# are signed in place in OUT (the inputs are copied, never modified). BASEURL (default file://OUT) goes into the .repo.
# Tools: gpg, apt-ftparchive (apt-utils), createrepo_c (createrepo-c), rpmsign (rpm).
set -euo pipefail

key="" out="dist/repos" baseurl=""
usage() { sed -n 's/^#   //p' "$0" >&2; exit 2; }
while getopts "k:o:u:h" opt; do
	case "$opt" in
	k) key="$OPTARG" ;;
	o) out="$OPTARG" ;;
	u) baseurl="$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ -n "$key" && $# -gt 0 ]] || usage
die() { echo "release-repos: $*" >&2; exit 1; }
for t in gpg apt-ftparchive createrepo_c rpmsign; do
	command -v "$t" >/dev/null || die "$t is missing (apt-get install gpg apt-utils createrepo-c rpm)"
done
gpg --batch --list-secret-keys "$key" >/dev/null 2>&1 || die "no secret key $key in ${GNUPGHOME:-~/.gnupg}"
fpr="$(gpg --batch --with-colons --list-secret-keys "$key" | awk -F: '$1 == "fpr" {print $10; exit}')"
debs=() rpms=() tars=()
for f in "$@"; do
	[[ -f "$f" ]] || die "not a file: $f"
	case "$f" in
	*.deb) debs+=("$f") ;;
	*.rpm) rpms+=("$f") ;;
	*.tar.gz) tars+=("$f") ;;
	*) die "not a .deb, .rpm or .tar.gz: $f" ;;
	esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
baseurl="${baseurl:-file://$out/rpm}"
sign() { gpg --batch --yes --local-user "$fpr" "$@"; }

gpg --batch --yes --export "$fpr" >"$out/ambient-agent-archive-keyring.gpg"
gpg --batch --yes --armor --export "$fpr" >"$out/ambient-agent-archive-keyring.asc"

# The keyring package, versioned by the key's creation date so that a new key upgrades it.
nfpm="${NFPM:-${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}/nfpm-v2.45.2/nfpm}"
[[ -x "$nfpm" ]] || die "nfpm not found at $nfpm: build the packages first (make deb), or set NFPM"
created="$(gpg --batch --with-colons --list-keys "$fpr" | awk -F: '$1 == "pub" {print $6; exit}')"
kver="$(date -u -d "@$created" +%Y.%m.%d)"
kwork="$(mktemp -d)"
trap 'rm -rf "$kwork"' EXIT
here="$(cd "$(dirname "$0")" && pwd)"
cp "$out/ambient-agent-archive-keyring.gpg" "$out/ambient-agent-archive-keyring.asc" "$here/copyright" "$kwork/"
cat >"$kwork/changelog.yaml" <<YAML
- semver: "$kver-1"
  date: "$(date -u -d "@$created" +%Y-%m-%dT%H:%M:%SZ)"
  packager: "The ambient-agent Authors <ambient-agent@users.noreply.github.com>"
  deb:
    urgency: medium
    distributions: [stable]
  changes:
    - note: "The repositories' signing key $fpr."
YAML
cat >"$kwork/nfpm.yaml" <<YAML
name: ambient-agent-archive-keyring
arch: all
platform: linux
version: "$kver"
release: "1"
section: misc
priority: optional
maintainer: "The ambient-agent Authors <ambient-agent@users.noreply.github.com>"
description: |-
  OpenPGP key of the ambient-agent package repositories
  The key that signs the ambient-agent apt and dnf repositories, for apt's
  signed-by and dnf's gpgkey.
vendor: ambient-agent
homepage: https://github.com/ambient-agent/ambient-agent
license: Apache-2.0
changelog: changelog.yaml
rpm:
  group: System Environment/Base
contents:
  - src: copyright
    dst: /usr/share/doc/ambient-agent-archive-keyring/copyright
    packager: deb
    file_info: {mode: 0644}
  - src: copyright
    dst: /usr/share/licenses/ambient-agent-archive-keyring/copyright
    packager: rpm
    type: license
    file_info: {mode: 0644}
  - src: ambient-agent-archive-keyring.gpg
    dst: /usr/share/keyrings/ambient-agent-archive-keyring.gpg
    packager: deb
    file_info: {mode: 0644}
  - src: ambient-agent-archive-keyring.asc
    dst: /etc/pki/rpm-gpg/ambient-agent-archive-keyring.asc
    packager: rpm
    type: config
    file_info: {mode: 0644}
YAML
(cd "$kwork" && "$nfpm" package --config nfpm.yaml --packager deb --target "$kwork/keyring.deb" >/dev/null &&
	"$nfpm" package --config nfpm.yaml --packager rpm --target "$kwork/keyring.rpm" >/dev/null)
# As built, before the repositories sign them (what packaging/lint.sh checks).
mkdir -p "$out/keyring"
cp -f "$kwork/keyring.deb" "$out/keyring/ambient-agent-archive-keyring_${kver}-1_all.deb"
cp -f "$kwork/keyring.rpm" "$out/keyring/ambient-agent-archive-keyring-${kver}-1.noarch.rpm"
debs+=("$kwork/keyring.deb")
rpms+=("$kwork/keyring.rpm")

if [[ ${#debs[@]} -gt 1 ]]; then
	apt="$out/apt"
	mkdir -p "$apt/pool/main"
	for d in "${debs[@]}"; do
		cp -f "$d" "$apt/pool/main/$(dpkg-deb -f "$d" Package)_$(dpkg-deb -f "$d" Version)_$(dpkg-deb -f "$d" Architecture).deb"
	done
	archs="$(for d in "$apt"/pool/main/*.deb; do dpkg-deb -f "$d" Architecture; done | sort -u | tr '\n' ' ')"
	for arch in $archs; do
		dir="dists/stable/main/binary-$arch"
		mkdir -p "$apt/$dir"
		(cd "$apt" && apt-ftparchive --arch "$arch" packages pool/main >"$dir/Packages")
		gzip -9nc "$apt/$dir/Packages" >"$apt/$dir/Packages.gz"
	done
	(cd "$apt/dists/stable" && apt-ftparchive \
		-o APT::FTPArchive::Release::Origin=ambient-agent -o APT::FTPArchive::Release::Label=ambient-agent \
		-o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
		-o "APT::FTPArchive::Release::Architectures=${archs% }" -o APT::FTPArchive::Release::Components=main \
		release . >Release.new && mv Release.new Release)
	sign --clearsign -o "$apt/dists/stable/InRelease" "$apt/dists/stable/Release"
	sign --armor --detach-sign -o "$apt/dists/stable/Release.gpg" "$apt/dists/stable/Release"
	echo "release-repos: apt repository in $apt: deb [signed-by=/usr/share/keyrings/ambient-agent-archive-keyring.gpg] <url> stable main" >&2
fi

if [[ ${#rpms[@]} -gt 1 ]]; then
	repo="$out/rpm"
	mkdir -p "$repo"
	for r in "${rpms[@]}"; do
		name="$(rpm -qp --qf '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm' "$r" 2>/dev/null)"
		cp -f "$r" "$repo/$name"
		rpmsign --define "_gpg_name $fpr" --define "_gpg_path ${GNUPGHOME:-$HOME/.gnupg}" --define "__gpg $(command -v gpg)" \
			--addsign "$repo/$name" >/dev/null
	done
	createrepo_c --quiet "$repo"
	sign --armor --detach-sign -o "$repo/repodata/repomd.xml.asc" "$repo/repodata/repomd.xml"
	cat >"$out/ambient-agent.repo" <<REPO
[ambient-agent]
name=ambient-agent
baseurl=$baseurl
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/ambient-agent-archive-keyring.asc
REPO
	echo "release-repos: dnf repository in $repo ($out/ambient-agent.repo; the key goes to /etc/pki/rpm-gpg/)" >&2
fi

if [[ ${#tars[@]} -gt 0 ]]; then
	mkdir -p "$out/tarball"
	cp -f "${tars[@]}" "$out/tarball/"
	(cd "$out/tarball" && sha256sum -- *.tar.gz >SHA256SUMS)
	sign --armor --detach-sign -o "$out/tarball/SHA256SUMS.asc" "$out/tarball/SHA256SUMS"
	echo "release-repos: $out/tarball/SHA256SUMS signed" >&2
fi
echo "$out"

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
#   packaging/release-repos.sh -k KEY [-k KEY2] [-o OUT] [-u BASEURL] FILE.deb|FILE.rpm|FILE.tar.gz...
#
# KEY is a signing key's fingerprint in $GNUPGHOME (or gpg's default home): the secret key must be there and usable
# without a prompt (an agent holding the passphrase, or none); an id that matches several keys is refused. Nothing is
# signed with any other key. To rotate keys, give the new key and the old one: InRelease, Release.gpg, repomd.xml.asc
# and SHA256SUMS.asc then carry a signature of each, the keyring holds both, and hosts that trust only the old key
# still verify the repository (and install the keyring package that brings them the new one); the rpms are signed
# with the first key. OUT is replaced whole once everything is built (a failure leaves the previous OUT as it was);
# the inputs are copied, never modified. BASEURL (default file://OUT/rpm) goes into the .repo.
# Tools: gpg, apt-ftparchive (apt-utils), dpkg-deb, createrepo_c (createrepo-c), rpm and rpmsign (rpm).
set -euo pipefail

keys=() out="dist/repos" baseurl=""
usage() { sed -n 's/^#   //p' "$0" >&2; exit 2; }
while getopts "k:o:u:h" opt; do
	case "$opt" in
	k) keys+=("$OPTARG") ;;
	o) out="$OPTARG" ;;
	u) baseurl="$OPTARG" ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ ${#keys[@]} -gt 0 && $# -gt 0 ]] || usage
die() { echo "release-repos: $*" >&2; exit 1; }
for t in gpg apt-ftparchive dpkg-deb createrepo_c rpm rpmsign sha256sum; do
	command -v "$t" >/dev/null || die "$t is missing (apt-get install gpg apt-utils dpkg createrepo-c rpm)"
done
fprs=()
for k in "${keys[@]}"; do
	mapfile -t found < <(gpg --batch --with-colons --list-secret-keys -- "$k" 2>/dev/null | awk -F: '$1 == "sec" {getline; print $10}')
	[[ ${#found[@]} -gt 0 ]] || die "no secret key $k in ${GNUPGHOME:-~/.gnupg}"
	[[ ${#found[@]} -eq 1 ]] || die "$k matches ${#found[@]} secret keys (${found[*]}): give a fingerprint"
	fprs+=("${found[0]}")
done
fpr="${fprs[0]}"
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
# Built beside OUT, then put in its place: never a mix of new indexes and old signatures.
mkdir -p "$(dirname "$out")"
final="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
out="$(mktemp -d "$final.new.XXXXXX")"
chmod 0755 "$out"
trap 'rm -rf "$out" "${kwork:-}"' EXIT
baseurl="${baseurl:-file://$final/rpm}"
signers=()
for f in "${fprs[@]}"; do signers+=(--local-user "$f!"); done
sign() { gpg --batch --yes "${signers[@]}" "$@"; }

gpg --batch --yes --export "${fprs[@]}" >"$out/ambient-agent-archive-keyring.gpg"
gpg --batch --yes --armor --export "${fprs[@]}" >"$out/ambient-agent-archive-keyring.asc"

# The keyring package, versioned by the newest key's creation time and the number of keys, so that a new key (or
# a rotation's second key) upgrades it.
nfpm="${NFPM:-${AMBIENT_TOOLS_CACHE:-$HOME/.cache/ambient-agent}/nfpm-v2.45.2/nfpm}"
[[ -x "$nfpm" ]] || die "nfpm not found at $nfpm: build the packages first (make deb), or set NFPM"
created="$(gpg --batch --with-colons --list-keys "${fprs[@]}" | awk -F: '$1 == "pub" && $6 > max {max = $6} END {print max}')"
kver="$(date -u -d "@$created" +%Y.%m.%d.%H%M%S).${#fprs[@]}"
kwork="$(mktemp -d)"
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
    - note: "The repositories' signing keys ${fprs[*]}."
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
	echo "release-repos: apt repository in $final/apt: deb [signed-by=/usr/share/keyrings/ambient-agent-archive-keyring.gpg] <url> stable main" >&2
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
	echo "release-repos: dnf repository in $final/rpm ($final/ambient-agent.repo; the key goes to /etc/pki/rpm-gpg/)" >&2
fi

if [[ ${#tars[@]} -gt 0 ]]; then
	mkdir -p "$out/tarball"
	cp -f "${tars[@]}" "$out/tarball/"
	(cd "$out/tarball" && sha256sum -- *.tar.gz >SHA256SUMS)
	sign --armor --detach-sign -o "$out/tarball/SHA256SUMS.asc" "$out/tarball/SHA256SUMS"
	echo "release-repos: $final/tarball/SHA256SUMS signed" >&2
fi
# Swap: the old OUT goes aside, the new one takes its name, the old one is removed.
if [[ -e "$final" ]]; then
	mv "$final" "$out.old"
fi
mv "$out" "$final"
rm -rf "$out.old"
trap 'rm -rf "${kwork:-}"' EXIT
echo "$final"

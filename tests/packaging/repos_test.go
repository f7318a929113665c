package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// throwawayKey makes a signing key (RSA 3072, what dnf and apt on every supported release verify) in a fresh
// GNUPGHOME without a passphrase, and returns the home and the key's fingerprint: the operator's key in a release.
func throwawayKey(t *testing.T, name string) (home, fpr string) {
	t.Helper()
	home = filepath.Join(t.TempDir(), "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	gpg(t, home, "", "--passphrase", "", "--quick-generate-key", name+" <release@example.invalid>", "rsa3072", "sign", "never")
	for _, line := range strings.Split(gpg(t, home, "", "--with-colons", "--list-secret-keys"), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" {
			return home, f[9]
		}
	}
	t.Fatal("no fingerprint for the key just made")
	return "", ""
}

// gpg runs a command (gpg itself when name is "") with GNUPGHOME set to home.
func gpg(t *testing.T, home, name string, args ...string) string {
	t.Helper()
	if name == "" {
		name, args = "gpg", append([]string{"--batch"}, args...)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// copyTree copies a directory (regular files only, modes kept).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	run(t, "", "cp", "-a", src, dst)
}

// Signed repositories, as `make release-repos` builds them with the operator's key: the apt repository installs
// through signed-by in a booted Debian; a tampered package, an unsigned repository and one signed by another key
// are refused there. The rpms carry a signature rpm checks (and a tampered rpm fails it), repomd.xml and the
// tarballs' SHA256SUMS have detached signatures that verify.
func TestSignedRepositories(t *testing.T) {
	require(t, true, "systemd-nspawn", "nsenter", "debootstrap", "gpg", "gpgv", "apt-ftparchive", "createrepo_c", "rpmsign", "rpm")
	t.Parallel()
	a := built(t)
	root := repoRoot(t)
	home, fpr := throwawayKey(t, "ambient-agent test release")
	out := filepath.Join(t.TempDir(), "repos")
	deb, rpm, tarball := a.path(t, "deb", runtime.GOARCH), a.path(t, "rpm", runtime.GOARCH), a.path(t, "tarball", runtime.GOARCH)
	gpg(t, home, filepath.Join(root, "packaging", "release-repos.sh"), "-k", fpr, "-o", out, deb, rpm, tarball)
	keyring := filepath.Join(out, "ambient-agent-archive-keyring.gpg")

	// On the host: every signature verifies with the published key, and only with it.
	run(t, "", "gpgv", "--keyring", keyring, filepath.Join(out, "apt", "dists", "stable", "InRelease"))
	run(t, "", "gpgv", "--keyring", keyring, filepath.Join(out, "apt", "dists", "stable", "Release.gpg"), filepath.Join(out, "apt", "dists", "stable", "Release"))
	run(t, "", "gpgv", "--keyring", keyring, filepath.Join(out, "rpm", "repodata", "repomd.xml.asc"), filepath.Join(out, "rpm", "repodata", "repomd.xml"))
	run(t, "", "gpgv", "--keyring", keyring, filepath.Join(out, "tarball", "SHA256SUMS.asc"), filepath.Join(out, "tarball", "SHA256SUMS"))
	run(t, filepath.Join(out, "tarball"), "sha256sum", "-c", "SHA256SUMS")

	// rpm: the package is signed with the key; a byte changed in it fails the check.
	rpmdb := filepath.Join(t.TempDir(), "rpmdb")
	run(t, "", "rpmkeys", "--dbpath", rpmdb, "--import", filepath.Join(out, "ambient-agent-archive-keyring.asc"))
	signed := filepath.Join(out, "rpm", "ambient-agent-"+firstVersion+"-"+release+".x86_64.rpm")
	if runtime.GOARCH != "amd64" {
		signed = filepath.Join(out, "rpm", "ambient-agent-"+firstVersion+"-"+release+".aarch64.rpm")
	}
	if check := run(t, "", "rpmkeys", "--dbpath", rpmdb, "--checksig", "-v", signed); !strings.Contains(check, "Signature, key ID") ||
		strings.Contains(check, "NOT OK") || strings.Contains(check, "NOKEY") {
		t.Errorf("rpmkeys --checksig of the signed rpm:\n%s", check)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.rpm")
	flipByte(t, signed, tampered, -4096)
	if out, err := runErr("rpmkeys", "--dbpath", rpmdb, "--checksig", tampered); err == nil {
		t.Errorf("a tampered rpm passed the signature check:\n%s", out)
	}
	if check := run(t, "", "rpmkeys", "--dbpath", rpmdb, "--checksig", "-v", rpm); strings.Contains(check, "Signature, key ID") {
		t.Errorf("the input rpm was changed (it is signed now), not copied:\n%s", check)
	}

	// apt, in a booted Debian: the only sources are the ones this test writes.
	aptRepo := filepath.Join(out, "apt")
	tamperedRepo := filepath.Join(t.TempDir(), "tampered")
	copyTree(t, aptRepo, tamperedRepo)
	pool, _ := filepath.Glob(filepath.Join(tamperedRepo, "pool", "main", "ambient-agent_*.deb"))
	if len(pool) != 1 {
		t.Fatalf("pool: %v", pool)
	}
	flipByte(t, pool[0], pool[0], -4096)
	unsignedRepo := filepath.Join(t.TempDir(), "unsigned")
	copyTree(t, aptRepo, unsignedRepo)
	for _, f := range []string{"InRelease", "Release.gpg"} {
		if err := os.Remove(filepath.Join(unsignedRepo, "dists", "stable", f)); err != nil {
			t.Fatal(err)
		}
	}
	// A key rotation: the repository signed by a new key and the old one. Hosts that trust only the old key still
	// verify it, and its keyring package brings them both keys.
	gpg(t, home, "", "--passphrase", "", "--quick-generate-key", "ambient-agent new key <release@example.invalid>", "rsa3072", "sign", "never")
	var newFpr string
	for _, line := range strings.Split(gpg(t, home, "", "--with-colons", "--list-secret-keys"), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && f[9] != fpr && newFpr == "" {
			newFpr = f[9]
		}
	}
	rotated := filepath.Join(t.TempDir(), "rotated")
	gpg(t, home, filepath.Join(root, "packaging", "release-repos.sh"), "-k", newFpr, "-k", fpr, "-o", rotated, deb)
	// A key id that names both keys is refused: the script never guesses which key signs.
	if out, err := exec.Command("env", "GNUPGHOME="+home, filepath.Join(root, "packaging", "release-repos.sh"), "-k", "ambient-agent", "-o", filepath.Join(t.TempDir(), "x"), deb).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "matches 2 secret keys") {
		t.Errorf("release-repos with an ambiguous key id: %v\n%s", err, out)
	}

	otherHome, otherFpr := throwawayKey(t, "someone else")
	otherRepo := filepath.Join(t.TempDir(), "other-repos")
	gpg(t, otherHome, filepath.Join(root, "packaging", "release-repos.sh"), "-k", otherFpr, "-o", otherRepo, deb)

	m := boot(t, bootableRoot(t), machineOpts{readOnly: map[string]string{
		aptRepo: "/srv/signed", tamperedRepo: "/srv/tampered", unsignedRepo: "/srv/unsigned",
		filepath.Join(otherRepo, "apt"): "/srv/other", keyring: "/srv/keyring.gpg", filepath.Join(rotated, "apt"): "/srv/rotated",
		filepath.Join(rotated, "ambient-agent-archive-keyring.gpg"): "/srv/rotated-keyring.gpg",
	}})
	m.run("rm -f /etc/apt/sources.list.d/*.list /etc/apt/sources.list && install -m 0644 /srv/keyring.gpg /usr/share/keyrings/ambient-agent-archive-keyring.gpg")
	source := func(dir string) {
		m.run("echo 'deb [signed-by=/usr/share/keyrings/ambient-agent-archive-keyring.gpg] file:" + dir + " stable main' >/etc/apt/sources.list.d/ambient-agent.list" +
			" && rm -rf /var/lib/apt/lists/* && apt-get clean")
	}

	source("/srv/unsigned")
	if out, code := m.try("apt-get update -q 2>&1; apt-get install -y -q ambient-agent 2>&1"); code == 0 || !strings.Contains(out, "is not signed") {
		t.Errorf("an unsigned repository: exit %d\n%s", code, out)
	}
	source("/srv/other")
	if out, code := m.try("apt-get update -q 2>&1; apt-get install -y -q ambient-agent 2>&1"); code == 0 || !strings.Contains(out, "NO_PUBKEY") {
		t.Errorf("a repository signed by another key: exit %d\n%s", code, out)
	}
	source("/srv/tampered")
	if out, code := m.try("apt-get update -q 2>&1 && apt-get install -y -q ambient-agent 2>&1"); code == 0 || !strings.Contains(out, "mismatch") {
		t.Errorf("a tampered package: exit %d\n%s", code, out)
	}
	m.run("! dpkg-query -W ambient-agent 2>/dev/null || dpkg-query -W -f='${Status}' ambient-agent | grep -q not-installed")
	source("/srv/signed")
	m.run("apt-get update -q && apt-get install -y -q ambient-agent")
	if v := m.run("dpkg-query -W -f='${Version}' ambient-agent"); v != firstVersion+"-"+release {
		t.Errorf("installed %q through signed-by, want %s-%s", v, firstVersion, release)
	}
	// The key ships as a package of the repository too, and it is the published key.
	m.run("apt-get install -y -q ambient-agent-archive-keyring && cmp /usr/share/keyrings/ambient-agent-archive-keyring.gpg /srv/keyring.gpg")
	// The rotated repository verifies with the old key alone, and its keyring package brings the new key.
	source("/srv/rotated")
	m.run("apt-get update -q && apt-get install -y -q ambient-agent-archive-keyring && cmp /usr/share/keyrings/ambient-agent-archive-keyring.gpg /srv/rotated-keyring.gpg")
	keyrpms, _ := filepath.Glob(filepath.Join(out, "rpm", "ambient-agent-archive-keyring-*.noarch.rpm"))
	if len(keyrpms) != 1 {
		t.Fatalf("the rpm repository has keyring packages %v, want one", keyrpms)
	}
	if list := run(t, "", "rpm", "--dbpath", rpmdb, "-qlp", keyrpms[0]); !strings.HasPrefix(list, "/etc/pki/rpm-gpg/ambient-agent-archive-keyring.asc\n") {
		t.Errorf("the keyring rpm holds %q", list)
	}
	if check := run(t, "", "rpmkeys", "--dbpath", rpmdb, "--checksig", "-v", keyrpms[0]); !strings.Contains(check, "Signature, key ID") || strings.Contains(check, "NOT OK") {
		t.Errorf("the keyring rpm is not signed:\n%s", check)
	}
	built, _ := filepath.Glob(filepath.Join(out, "keyring", "ambient-agent-archive-keyring*"))
	if len(built) != 2 {
		t.Fatalf("the keyring packages as built: %v, want a deb and an rpm", built)
	}
	run(t, root, filepath.Join(root, "packaging", "lint.sh"), built...)
}

// flipByte writes src to dst with one byte inverted at offset (from the end when negative).
func flipByte(t *testing.T, src, dst string, offset int) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if offset < 0 {
		offset += len(b)
	}
	b[offset] ^= 0xff
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

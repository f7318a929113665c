package packaging

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestTarballInstaller installs from the release tarball with install.sh on a booted systemd, takes the
// service through its life, and removes it with uninstall.sh.
func TestTarballInstaller(t *testing.T) {
	require(t, true, "systemd-nspawn", "nsenter", "debootstrap", "tar")
	t.Parallel()
	// The other way round from the .deb test: run in parallel, one debootstraps while the other builds.
	root := bootableRoot(t)
	a := built(t)
	tarball := a.path(t, "tarball", runtime.GOARCH)
	m := boot(t, root, machineOpts{readOnly: map[string]string{filepath.Dir(tarball): "/dist"}})

	dir := "/root/" + strings.TrimSuffix(filepath.Base(tarball), ".tar.gz")
	m.run("tar -xzf /dist/" + filepath.Base(tarball) + " -C /root")

	// Preflight: a tarball for another architecture is refused, saying why, and installs nothing.
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[runtime.GOARCH]
	out, code := m.try(fmt.Sprintf(`cp -a %[1]s /root/other && sed -i 's/^ARCH=.*/ARCH=%[2]s/' /root/other/MANIFEST &&
/root/other/install.sh`, dir, other))
	if code == 0 || !strings.Contains(out, "this tarball is for "+other) {
		t.Fatalf("install.sh of an %s tarball on %s: exit %d, want a refusal naming the architecture:\n%s", other, runtime.GOARCH, code, out)
	}
	m.run("! test -e /usr/local/bin/ambient-agent")

	// Install, twice: the second run is a no-op that keeps the configuration.
	out = m.run(dir + "/install.sh")
	if !strings.Contains(out, "preflight ok") {
		t.Fatalf("install.sh did not report its preflight:\n%s", out)
	}
	if out := m.run(dir + "/install.sh"); !strings.Contains(out, "kept your /etc/ambient-agent/config.toml") {
		t.Fatalf("a second install.sh did not keep the config:\n%s", out)
	}
	if out := strings.TrimSpace(m.run("systemctl is-enabled ambient-agent")); out != "enabled" {
		t.Fatalf("after install.sh the unit is %q, want enabled", out)
	}
	expectActive(m, "inactive")
	if owner := strings.TrimSpace(m.run("stat -c %U:%a /etc/ambient-agent/identity")); owner != "ambient-agent:750" {
		t.Fatalf("/etc/ambient-agent/identity is %s, want ambient-agent:750", owner)
	}
	if v := m.run("ambient-agent version"); !strings.Contains(v, firstVersion) {
		t.Fatalf("ambient-agent version says %q, want %s", strings.TrimSpace(v), firstVersion)
	}
	checkUnit(m, "/etc/systemd/system/ambient-agent.service")

	configure(m)
	serviceLifecycle(m)

	// Installing again over a running agent restarts it and keeps the edited config.
	sum := m.run("sha256sum /etc/ambient-agent/config.toml")
	pid := mainPID(m)
	flakes := cgroupFailures(m)
	out, code = m.try(dir + "/install.sh")
	switch {
	case code == 0 && !strings.Contains(out, "restarted"):
		t.Fatalf("install.sh over a running agent did not restart it:\n%s", out)
	case code != 0 && cgroupFailures(m) == flakes:
		t.Fatalf("install.sh over a running agent: exit %d\n%s", code, out)
	case code != 0:
		t.Logf("install.sh: its restart failed: %s", cgroupFlake)
	}
	expectActiveAgain(m)
	if after := mainPID(m); after == pid {
		t.Fatalf("install.sh did not restart the running agent (MainPID still %d)", pid)
	}
	if after := m.run("sha256sum /etc/ambient-agent/config.toml"); after != sum {
		t.Fatalf("install.sh changed the edited config")
	}
	expectTable(m, true)
	expectNoLeak(m, true) // install.sh's restart kept the host closed

	// Uninstall: stopped, table gone, files gone, configuration kept; --purge deletes it; both idempotent.
	flakes = cgroupFailures(m)
	m.run("/usr/local/lib/ambient-agent/uninstall.sh")
	expectStopped(m, flakes)
	expectTable(m, false)
	expectNoAgentProcess(m)
	m.run("! test -e /usr/local/bin/ambient-agent && ! test -e /etc/systemd/system/ambient-agent.service")
	m.run("! test -e /etc/systemd/system/multi-user.target.wants/ambient-agent.service")
	m.run("! test -e /etc/systemd/system/ambient-agent-close.service && ! test -e /etc/systemd/system/sysinit.target.wants/ambient-agent-close.service")
	m.run("test -f /etc/ambient-agent/config.toml")
	m.run(dir + "/uninstall.sh --purge")
	m.run("! test -e /etc/ambient-agent && ! test -e /var/lib/ambient-agent")
	m.run(dir + "/uninstall.sh")
}

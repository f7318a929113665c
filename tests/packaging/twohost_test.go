package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTwoHostMeshFromInstallGuide follows docs/install.md's first-hour guide on two booted machines on one
// bridge: install the .deb on both, a mesh CA, one certificate per workload, static [[remote_workload]]
// entries, enable --now; then an HTTP request from vm-1 to vm-2's server crosses between the agents over
// HBONE, under the packaged, hardened unit, and vm-2's server sees vm-1's address as its client; then upgrades
// and restarts of both agents drop nothing (upgradesDropNothing).
func TestTwoHostMeshFromInstallGuide(t *testing.T) {
	require(t, true, "systemd-nspawn", "nsenter", "debootstrap", "dpkg-scanpackages", "tar", "ip")
	t.Parallel()
	a := built(t)
	root := bootableRoot(t)

	repo := filepath.Join(t.TempDir(), "repo")
	addToRepo(t, repo, a.path(t, "deb", runtime.GOARCH))
	shared := t.TempDir() // the admin's machine: the CA and the issued directories
	bridge := fmt.Sprintf("aabr%d", os.Getpid()%1000000)
	run(t, "", "ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() {
		if out, err := runErr("ip", "link", "del", bridge); err != nil {
			t.Errorf("removing bridge %s: %v\n%s", bridge, err, out)
		}
	})
	run(t, "", "ip", "link", "set", bridge, "up")

	type host struct {
		name, addr, sa, peerName, peerAddr, peerSA string
		m                                          *machine
	}
	hosts := []*host{
		{name: "vm-1", addr: "10.0.0.5", sa: "web", peerName: "vm-2", peerAddr: "10.0.0.7", peerSA: "api"},
		{name: "vm-2", addr: "10.0.0.7", sa: "api", peerName: "vm-1", peerAddr: "10.0.0.5", peerSA: "web"},
	}
	for _, h := range hosts {
		h.m = boot(t, root, machineOpts{
			name:     strings.ReplaceAll(h.name, "-", ""),
			readOnly: map[string]string{repo: "/repo", a.tools: "/tools"},
			writable: map[string]string{shared: "/admin"},
			bridge:   bridge,
		})
		h.m.run(fmt.Sprintf("ip addr add %s/24 dev host0 && ip link set host0 up", h.addr))
		// 1. Install.
		h.m.run("apt-get update -q && apt-get install -y -q ambient-agent")
	}

	// 2. A mesh CA on the admin's machine (here vm-1's shell, writing to the shared directory), one
	// certificate per workload.
	hosts[0].m.run(`set -e
ambient-agent ca init -dir /admin/mesh-ca -trust-domain cluster.local
ambient-agent ca issue -dir /admin/mesh-ca -namespace shop -service-account web -out /admin/vm-1-identity
ambient-agent ca issue -dir /admin/mesh-ca -namespace shop -service-account api -out /admin/vm-2-identity`)

	for _, h := range hosts {
		// 3. The identity directory onto its host, owned by the service user.
		h.m.run(fmt.Sprintf(`cp -r /admin/%s-identity/. /etc/ambient-agent/identity/ &&
chown -R ambient-agent:ambient-agent /etc/ambient-agent/identity`, h.name))
		// 4. The shipped config, named and with the local and the remote workload appended.
		h.m.run(fmt.Sprintf(`set -e
sed -i 's/^# name = "vm-1"$/name = "%[1]s"/' /etc/ambient-agent/config.toml
grep -q '^name = "%[1]s"$' /etc/ambient-agent/config.toml
cat >>/etc/ambient-agent/config.toml <<'EOF'

[[workload]]
name = "%[3]s"
namespace = "shop"
service_account = "%[3]s"
addresses = ["%[2]s"]

[[remote_workload]]
name = "%[6]s"
namespace = "shop"
service_account = "%[6]s"
addresses = ["%[5]s"]
node = "%[4]s"
tunnel = "hbone"
EOF`, h.name, h.addr, h.sa, h.peerName, h.peerAddr, h.peerSA))
		// 5. Validate and start.
		h.m.run("ambient-agent validate")
		systemctl(h.m, "enable --now")
		expectActive(h.m, "active")
		h.m.run("ambient-agent status")
	}

	// 6. vm-2 serves, vm-1 asks.
	vm1, vm2 := hosts[0].m, hosts[1].m
	vm2.run(`mkdir -p /srv/www && echo hello-from-api >/srv/www/index.html &&
busybox httpd -p 10.0.0.7:8080 -h /srv/www`)
	if out := vm1.run("timeout 20 busybox wget -q -O - http://10.0.0.7:8080/index.html"); strings.TrimSpace(out) != "hello-from-api" {
		t.Fatalf("vm-1 got %q from vm-2's server, want hello-from-api", out)
	}
	// Under the hardened unit (CAP_NET_ADMIN only) the server sees its real client, vm-1 (a CGI script prints
	// the REMOTE_ADDR busybox httpd gives it: the connection's peer).
	vm2.run(`mkdir -p /srv/www/cgi-bin && printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n' >/srv/www/cgi-bin/peer &&
chmod 755 /srv/www/cgi-bin/peer`)
	if out := vm1.run("timeout 20 busybox wget -q -O - http://10.0.0.7:8080/cgi-bin/peer"); strings.TrimSpace(out) != "10.0.0.5" {
		t.Errorf("vm-2's server saw the client %q, want vm-1's address 10.0.0.5", strings.TrimSpace(out))
	}
	vm1.eventually(10*time.Second, "vm-1's agent logs the outbound connection over HBONE",
		"journalctl -u ambient-agent -o cat --no-pager | grep 'direction=outbound' | grep -F 'route=hbone'")
	vm2.eventually(10*time.Second, "vm-2's agent logs the inbound HBONE connection from web's identity",
		"journalctl -u ambient-agent -o cat --no-pager | grep 'direction=inbound ' | grep -F 'src_identity=spiffe://cluster.local/ns/shop/sa/web'")

	// 7. Upgrades and restarts drop nothing.
	upgradesDropNothing(t, a, repo, vm1, vm2)
}

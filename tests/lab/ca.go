package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// ca is the lab's mesh root, made with the agent's own built-in CA.
type ca struct {
	once sync.Once
	dir  string
	err  error
}

// Issue gives the host a certificate for spiffe://cluster.local/ns/<ns>/sa/<sa>
// from the lab's root (created on first use with `ambient-agent ca init`) and
// returns the host's [identity] dir.
func (h *Host) Issue(bin, ns, sa string) string {
	return h.IssueWithIPs(bin, ns, sa)
}

// IssueWithIPs is Issue with the addresses ips in the certificate's IP SANs
// (`ca issue -ip`): what proves the addresses a workload may claim.
func (h *Host) IssueWithIPs(bin, ns, sa string, ips ...string) string {
	l := h.lab
	l.t.Helper()
	l.ca.once.Do(func() {
		l.ca.dir = filepath.Join(l.dir, "ca")
		l.ca.err = runQuiet(bin, "ca", "init", "-dir", l.ca.dir, "-trust-domain", "cluster.local")
	})
	if l.ca.err != nil {
		l.t.Fatalf("lab CA: %v", l.ca.err)
	}
	out := filepath.Join(h.Dir, "identity")
	args := []string{"ca", "issue", "-dir", l.ca.dir, "-namespace", ns, "-service-account", sa, "-out", out}
	for _, ip := range ips {
		args = append(args, "-ip", ip)
	}
	if err := runQuiet(bin, args...); err != nil {
		l.t.Fatalf("issue %s/%s for %s: %v", ns, sa, h.Name, err)
	}
	return out
}

// IdentityDir is where Issue writes the host's certificates.
func (h *Host) IdentityDir() string { return filepath.Join(h.Dir, "identity") }

func runQuiet(bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	return cmd.Run()
}

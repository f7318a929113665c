package ca

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
)

var (
	td  = spiffeid.RequireTrustDomainFromString(trustDomain)
	web = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	db  = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/db")
)

// agent is the agent's istio source for ids, pointed at d, with its log.
type agent struct {
	src      identity.Source
	tokenDir string
	log      *logBuffer
}

func startAgent(t *testing.T, d *istiod, validity time.Duration, ids ...spiffeid.ID) *agent {
	t.Helper()
	dir := t.TempDir()
	rootCert := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(rootCert, d.rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	a := &agent{tokenDir: filepath.Join(dir, "tokens"), log: &logBuffer{}}
	src, err := identity.New(identity.Options{
		Source: identity.SourceIstio, TrustDomain: td, Identities: ids,
		Logger: slog.New(slog.NewTextHandler(a.log, nil)),
		Istio: identity.IstioOptions{
			Address: d.addr, ServerName: istiodName, RootCert: rootCert, TokenDir: a.tokenDir,
			ClusterID: "Kubernetes", Validity: validity,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.src = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel; want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log)
		}
	})
	return a
}

// writeToken puts id's service-account token where the agent reads it.
func (a *agent) writeToken(t *testing.T, id spiffeid.ID, key *rsa.PrivateKey) {
	t.Helper()
	ns, sa, _ := identity.ParseIstioID(id)
	path := identity.IstioTokenPath(a.tokenDir, ns, sa)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(token(t, key, ns, sa)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (a *agent) serial(id spiffeid.ID) string {
	svid, ok := a.src.Snapshot().SVID(id)
	if !ok {
		return ""
	}
	return svid.Certificates[0].SerialNumber.Text(16)
}

// TestIstiodIssuesAndRenews: with a valid service-account token, Istio's CA issues the agent a certificate for
// exactly that identity, which chains to Istio's root; the agent renews it at half its lifetime and keeps the
// first one in use until then.
func TestIstiodIssuesAndRenews(t *testing.T) {
	d := startIstiod(t)
	a := startAgent(t, d, 4*time.Second, web)
	a.writeToken(t, web, d.clusterKey)
	eventually(t, 10*time.Second, "ready", a.src.Ready)
	first := a.serial(web)

	svid, _ := a.src.Snapshot().SVID(web)
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
		t.Errorf("Istio issued URI SANs %v; want exactly %s", leaf.URIs, web)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(d.rootPEM)
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the certificate does not chain to Istio's root: %v", err)
	}
	if b, err := a.src.Snapshot().GetX509BundleForTrustDomain(td); err != nil || len(b.X509Authorities()) != 1 {
		t.Errorf("trust bundle %v, %v; want Istio's root", b, err)
	}

	start := time.Now()
	for a.serial(web) == first && time.Since(start) < 6*time.Second {
		if !a.src.Ready() {
			t.Fatalf("not ready %s into a 4s certificate; the first must stay in use until renewed", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a.serial(web) == first {
		t.Fatalf("not renewed within 6s of a 4s certificate")
	}
	t.Logf("renewed %s after the first certificate was seen", time.Since(start).Round(time.Millisecond))
}

// TestIstiodRefusesAnotherClustersToken: a token the cluster did not sign is refused by Istio's authenticator;
// the agent says so, naming the identity and istiod's answer, retries, and is not ready; the token replaced on
// disk is used by the next retry.
func TestIstiodRefusesAnotherClustersToken(t *testing.T) {
	d := startIstiod(t)
	a := startAgent(t, d, 0, web, db)
	a.writeToken(t, web, d.clusterKey)
	a.writeToken(t, db, rsaKey(t))

	refusal := "identity: certificate for " + db.String() + ": istiod " + d.addr +
		" answered Unauthenticated: request authenticate failure"
	eventually(t, 10*time.Second, "refused twice", func() bool { return strings.Count(a.log.String(), refusal) >= 2 })
	if a.src.Ready() || a.serial(web) == "" || a.serial(db) != "" {
		t.Fatalf("ready %v, web %q, db %q; want web's certificate only, not ready", a.src.Ready(), a.serial(web), a.serial(db))
	}

	a.writeToken(t, db, d.clusterKey)
	eventually(t, 10*time.Second, "ready with the cluster's token", a.src.Ready)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer collects the agent's log; the source writes it from its own goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

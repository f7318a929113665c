package identity_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	tdLocal  = spiffeid.RequireTrustDomainFromString("cluster.local")
	idA      = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/web")
	idB      = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/db")
	idOtherT = spiffeid.RequireFromString("spiffe://other.local/ns/shop/sa/web")
)

// filesFixture is a directory in the files layout with a valid root and a valid pair per identity.
type filesFixture struct {
	dir   string
	ca    *testCA
	certs map[spiffeid.ID]issued
}

func newFilesFixture(t *testing.T, ids ...spiffeid.ID) *filesFixture {
	t.Helper()
	f := &filesFixture{dir: t.TempDir(), ca: newTestCA(t, "cluster.local"), certs: map[spiffeid.ID]issued{}}
	writeFile(t, identity.BundlePath(f.dir), f.ca.rootPEM())
	for _, id := range ids {
		f.certs[id] = f.ca.workload(t, id)
		writePair(t, f.dir, id, f.certs[id].chainPEM, f.certs[id].keyPEM)
	}
	return f
}

func (f *filesFixture) paths(id spiffeid.ID) (chain, key string) {
	ns, sa, _ := identity.ParseIstioID(id)
	return identity.ChainPath(f.dir, ns, sa), identity.KeyPath(f.dir, ns, sa)
}

func (f *filesFixture) options(log *logBuffer, ids ...spiffeid.ID) identity.Options {
	o := identity.Options{Source: identity.SourceFiles, Dir: f.dir, TrustDomain: tdLocal, Identities: ids, PollInterval: 20 * time.Millisecond}
	if log != nil {
		o.Logger = log.logger()
	}
	return o
}

func TestFilesSourceLoads(t *testing.T) {
	f := newFilesFixture(t, idA, idB)
	src, err := identity.New(f.options(nil, idA, idB))
	if err != nil {
		t.Fatal(err)
	}
	if !src.Ready() {
		t.Fatal("not ready after loading valid files")
	}
	for _, id := range []spiffeid.ID{idA, idB} {
		cert, ok := src.Snapshot().Certificate(id)
		if !ok || cert.Leaf.SerialNumber.Cmp(f.certs[id].cert.SerialNumber) != 0 {
			t.Errorf("Certificate(%s) = %v, %v; want serial %x", id, cert, ok, f.certs[id].cert.SerialNumber)
		}
	}
	infos := src.Certificates()
	if len(infos) != 3 || infos[0].Kind != identity.KindWorkload || infos[2].Kind != identity.KindRoot {
		t.Fatalf("Certificates() = %+v; want two workload leaves then the root", infos)
	}
	if infos[0].Identity != idB.String() || infos[0].Serial != f.certs[idB].cert.SerialNumber.Text(16) ||
		!infos[0].NotAfter.Equal(f.certs[idB].cert.NotAfter) {
		t.Errorf("Certificates()[0] = %+v; want %s with its serial and expiry", infos[0], idB)
	}
	dump, _ := json.Marshal(infos)
	if strings.Contains(string(dump), "PRIVATE") || strings.Contains(strings.ToLower(string(dump)), "key") {
		t.Errorf("the certificate dump mentions keys: %s", dump)
	}
}

func TestFilesSourceRefusesBadFiles(t *testing.T) {
	other := newTestCA(t, "cluster.local")
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	type change func(t *testing.T, f *filesFixture, chain, key string)
	writeChain := func(make func(t *testing.T, f *filesFixture) []byte) change {
		return func(t *testing.T, f *filesFixture, chain, _ string) { writeFile(t, chain, make(t, f)) }
	}
	leafWith := func(uris []string, edit ...func(*x509.Certificate)) change {
		return func(t *testing.T, f *filesFixture, chain, key string) {
			l := f.ca.leaf(t, uris, edit...)
			writeFile(t, chain, l.chainPEM)
			writeFile(t, key, l.keyPEM)
		}
	}
	for name, tc := range map[string]struct {
		change change
		file   string // "chain", "key" or "bundle": the file the error must name
		want   string
	}{
		"expired": {leafWith([]string{idA.String()}, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		}), "chain", "expired at"},
		"not yet valid": {leafWith([]string{idA.String()}, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(time.Hour)
			c.NotAfter = time.Now().Add(2 * time.Hour)
		}), "chain", "not valid before"},
		"key of another certificate": {func(t *testing.T, f *filesFixture, _, key string) {
			writeFile(t, key, f.ca.workload(t, idA).keyPEM)
		}, "key", "private key does not match the certificate"},
		"no URI SAN":           {leafWith(nil), "chain", "no URI SAN"},
		"two URI SANs":         {leafWith([]string{idA.String(), idB.String()}), "chain", "2 URI SANs"},
		"non-SPIFFE URI SAN":   {leafWith([]string{"https://web.shop/"}), "chain", "is not a SPIFFE ID"},
		"another trust domain": {leafWith([]string{idOtherT.String()}), "chain", `of trust domain "other.local", not "cluster.local"`},
		"another identity":     {leafWith([]string{idB.String()}), "chain", "is for " + idB.String() + ", not " + idA.String()},
		"leaf is a CA":         {leafWith([]string{idA.String()}, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }), "chain", "CA"},
		"issued by another root": {func(t *testing.T, f *filesFixture, chain, key string) {
			l := other.workload(t, idA)
			writeFile(t, chain, l.chainPEM)
			writeFile(t, key, l.keyPEM)
		}, "chain", "does not verify against the trust bundle"},
		"missing chain": {func(t *testing.T, f *filesFixture, chain, _ string) { os.Remove(chain) }, "chain", "no such file"},
		"chain is a directory": {func(t *testing.T, f *filesFixture, chain, _ string) {
			os.Remove(chain)
			os.Mkdir(chain, 0o755)
		}, "chain", "is a directory"},
		"chain not PEM": {writeChain(func(*testing.T, *filesFixture) []byte { return []byte("hello\n") }), "chain", "no PEM CERTIFICATE block"},
		"chain truncated": {writeChain(func(t *testing.T, f *filesFixture) []byte {
			return f.certs[idA].chainPEM[:len(f.certs[idA].chainPEM)/2]
		}), "chain", "truncated or malformed PEM block"},
		"chain holds a key": {writeChain(func(t *testing.T, f *filesFixture) []byte { return f.certs[idA].keyPEM }), "chain", `"PRIVATE KEY", want CERTIFICATE`},
		"chain bad DER": {writeChain(func(*testing.T, *filesFixture) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
		}), "chain", "PEM block 1"},
		"missing key":     {func(t *testing.T, f *filesFixture, _, key string) { os.Remove(key) }, "key", "no such file"},
		"key not PEM":     {func(t *testing.T, f *filesFixture, _, key string) { writeFile(t, key, []byte("secret")) }, "key", "no PEM private key block"},
		"key holds certs": {func(t *testing.T, f *filesFixture, _, key string) { writeFile(t, key, f.certs[idA].chainPEM) }, "key", `PEM block is "CERTIFICATE"`},
		"key is X25519": {func(t *testing.T, f *filesFixture, _, key string) {
			writeFile(t, key, pemKey(t, x25519))
		}, "key", "unsupported private key type"},
		"key bad DER": {func(t *testing.T, f *filesFixture, _, key string) {
			writeFile(t, key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
		}, "key", "parse PRIVATE KEY"},
		"missing bundle": {func(t *testing.T, f *filesFixture, _, _ string) { os.Remove(identity.BundlePath(f.dir)) }, "bundle", "no such file"},
		"bundle is a leaf": {func(t *testing.T, f *filesFixture, _, _ string) {
			writeFile(t, identity.BundlePath(f.dir), f.certs[idA].chainPEM)
		}, "bundle", "is not a CA certificate"},
		"bundle empty": {func(t *testing.T, f *filesFixture, _, _ string) { writeFile(t, identity.BundlePath(f.dir), nil) }, "bundle", "no PEM CERTIFICATE block"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFilesFixture(t, idA)
			chain, key := f.paths(idA)
			tc.change(t, f, chain, key)
			src, err := identity.New(f.options(nil, idA))
			if err == nil {
				t.Fatalf("New accepted the files (ready=%v)", src.Ready())
			}
			msg := err.Error()
			path := map[string]string{"chain": chain, "key": key, "bundle": identity.BundlePath(f.dir)}[tc.file]
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, path) {
				t.Errorf("error %q\nwant it to contain %q and the file %s", msg, tc.want, path)
			}
			if tc.file != "bundle" && !strings.Contains(msg, idA.String()) {
				t.Errorf("error %q does not name the identity %s", msg, idA)
			}
		})
	}
}

// run starts src.Run and returns a function that stops it and checks that Run returned nil.
func run(t *testing.T, src identity.Source) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel; want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitSerial waits until src holds the certificate serial for id.
func waitSerial(t *testing.T, src identity.Source, id spiffeid.ID, serial string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, ok := src.Snapshot().Certificate(id); ok && c.Leaf.SerialNumber.Text(16) == serial {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, _ := src.Snapshot().Certificate(id)
	t.Fatalf("%s: serial is %x after 5s; want %s", id, c.Leaf.SerialNumber, serial)
}

// keptSerial waits until the source has logged one more refusal than before (it reports each new problem once),
// then checks that it still holds serial for id.
func keptSerial(t *testing.T, src identity.Source, log *logBuffer, before int, id spiffeid.ID, serial string) {
	t.Helper()
	const kept = "kept the previous certificate"
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(log.String(), kept) <= before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Count(log.String(), kept) <= before {
		t.Fatalf("no refusal logged within 5s:\n%s", log.String())
	}
	c, ok := src.Snapshot().Certificate(id)
	if !ok || c.Leaf.SerialNumber.Text(16) != serial {
		t.Fatalf("%s: serial changed to %x; want %s kept", id, c.Leaf.SerialNumber, serial)
	}
}

func refusals(log *logBuffer) int {
	return strings.Count(log.String(), "kept the previous certificate")
}

func serial(i issued) string { return i.cert.SerialNumber.Text(16) }

func TestFilesSourceReloadsAndKeepsGoodPairs(t *testing.T) {
	f := newFilesFixture(t, idA)
	var log logBuffer
	opts := f.options(&log, idA)
	// writePair renames the key, then fsyncs and renames the chain: on a busy
	// disk that takes longer than 20 ms, and the source would settle on the
	// half-written pair and never see (nor log) a bad pair's own problem.
	opts.PollInterval = 200 * time.Millisecond
	src, err := identity.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	<-src.Changed() // the initial load
	stop := run(t, src)
	chain, key := f.paths(idA)

	// Rotation by write-then-rename: the next Snapshot has the new certificate, and a change is signalled.
	next := f.ca.workload(t, idA)
	writePair(t, f.dir, idA, next.chainPEM, next.keyPEM)
	select {
	case <-src.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification after rotating the files")
	}
	waitSerial(t, src, idA, serial(next))

	// A chain whose key has not been written yet (a writer between its two files) does not replace the pair...
	third := f.ca.workload(t, idA)
	n := refusals(&log)
	writeFile(t, chain, third.chainPEM)
	keptSerial(t, src, &log, n, idA, serial(next))
	if !src.Ready() {
		t.Error("not ready while holding a valid certificate")
	}
	// ...and is taken once its key is there.
	writeFile(t, key, third.keyPEM)
	waitSerial(t, src, idA, serial(third))

	// Bad replacements are logged and the good pair stays.
	for name, bad := range map[string]issued{
		"expired":        f.ca.leaf(t, []string{idA.String()}, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) }),
		"wrong identity": f.ca.workload(t, idB),
		"mismatched key": {chainPEM: f.ca.workload(t, idA).chainPEM, keyPEM: third.keyPEM},
	} {
		t.Logf("writing a pair with %s", name)
		n := refusals(&log)
		writePair(t, f.dir, idA, bad.chainPEM, bad.keyPEM)
		keptSerial(t, src, &log, n, idA, serial(third))
	}
	if !strings.Contains(log.String(), "does not match") || !strings.Contains(log.String(), "expired at") {
		t.Errorf("the log does not say what was wrong:\n%s", log.String())
	}

	// A good pair after bad ones is taken again.
	last := f.ca.workload(t, idA)
	writePair(t, f.dir, idA, last.chainPEM, last.keyPEM)
	waitSerial(t, src, idA, serial(last))
	stop()
}

func TestFilesSourceNotReadyWhenCertificateExpires(t *testing.T) {
	f := newFilesFixture(t)
	short := f.ca.leaf(t, []string{idA.String()}, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(3 * time.Second) })
	writePair(t, f.dir, idA, short.chainPEM, short.keyPEM)
	var log logBuffer
	src, err := identity.New(f.options(&log, idA))
	if err != nil {
		t.Fatal(err)
	}
	run(t, src)
	if !src.Ready() {
		t.Fatal("not ready with a valid certificate")
	}
	deadline := time.Now().Add(10 * time.Second)
	for src.Ready() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if src.Ready() {
		t.Fatal("still ready after the only certificate expired")
	}
	// Ready() compares with the clock; the log line comes with the next poll.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), "not ready") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "not ready") {
		t.Errorf("expiry was not logged:\n%s", log.String())
	}
	fresh := f.ca.workload(t, idA)
	writePair(t, f.dir, idA, fresh.chainPEM, fresh.keyPEM)
	waitSerial(t, src, idA, serial(fresh))
	if !src.Ready() {
		t.Error("not ready after a fresh certificate replaced the expired one")
	}
}

func TestFilesSourceFollowsSymlinkSwap(t *testing.T) {
	// Kubernetes-style secret volumes: the files are symlinks into a ..data directory that is swapped.
	f := newFilesFixture(t)
	ns, sa, _ := identity.ParseIstioID(idA)
	dataDir := func(name string, i issued) {
		d := filepath.Join(f.dir, name)
		writeFile(t, filepath.Join(d, identity.ChainFile), i.chainPEM)
		writeFile(t, filepath.Join(d, identity.KeyFile), i.keyPEM)
	}
	first, second := f.ca.workload(t, idA), f.ca.workload(t, idA)
	dataDir("v1", first)
	dataDir("v2", second)
	wdir := filepath.Join(f.dir, ns, sa)
	os.MkdirAll(wdir, 0o755)
	for _, n := range []string{identity.ChainFile, identity.KeyFile} {
		if err := os.Symlink(filepath.Join("..data", n), filepath.Join(wdir, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join("..", "..", "v1"), filepath.Join(wdir, "..data")); err != nil {
		t.Fatal(err)
	}
	src, err := identity.New(f.options(nil, idA))
	if err != nil {
		t.Fatal(err)
	}
	run(t, src)
	waitSerial(t, src, idA, serial(first))
	tmp := filepath.Join(wdir, "..data_tmp")
	if err := os.Symlink(filepath.Join("..", "..", "v2"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(wdir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitSerial(t, src, idA, serial(second))
}

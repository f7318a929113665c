package identity

import (
	"fmt"
	"os"
	"path/filepath"
)

// The files layout, shared by the files source and the built-in CA (`ambient-agent ca issue -out DIR` writes a
// directory that can be used as [identity] dir as is):
//
//	DIR/root-cert.pem                      trust bundle: one or more root certificates
//	DIR/<namespace>/<sa>/cert-chain.pem    leaf first, then intermediates
//	DIR/<namespace>/<sa>/key.pem           the leaf's private key (PKCS#8, SEC 1 or PKCS#1), mode 0600
const (
	BundleFile = "root-cert.pem"
	ChainFile  = "cert-chain.pem"
	KeyFile    = "key.pem"
)

// BundlePath is where the trust bundle lives in dir.
func BundlePath(dir string) string { return filepath.Join(dir, BundleFile) }

// ChainPath is where the certificate chain of namespace/sa lives in dir.
func ChainPath(dir, ns, sa string) string { return filepath.Join(dir, ns, sa, ChainFile) }

// KeyPath is where the private key of namespace/sa lives in dir.
func KeyPath(dir, ns, sa string) string { return filepath.Join(dir, ns, sa, KeyFile) }

// WriteFiles puts a chain and its key into the layout under dir, each file written to a temporary name and
// renamed into place so that a reader never sees a partial file. The key is written first: a reader that sees
// the new chain with the old key refuses the pair and keeps its previous one until both are there.
func WriteFiles(dir, ns, sa string, chainPEM, keyPEM []byte) error {
	if err := os.MkdirAll(filepath.Join(dir, ns, sa), 0o755); err != nil {
		return fmt.Errorf("identity: write %s/%s: %w", ns, sa, err)
	}
	if err := WriteFileAtomic(KeyPath(dir, ns, sa), keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(ChainPath(dir, ns, sa), chainPEM, 0o644)
}

// WriteFileAtomic writes data to a temporary file next to path, syncs it and renames it over path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	done = true
	return nil
}

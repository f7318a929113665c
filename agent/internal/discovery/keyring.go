package discovery

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/hashicorp/memberlist"
)

// KeySize is the size of a gossip key: AES-256.
const KeySize = 32

// ReadKeyFile reads gossip keys: base64 (standard encoding), one a line, the first one used to send and all
// accepted. Blank lines and lines starting with '#' are skipped. Errors name the file and line, never a key.
func ReadKeyFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	return parseKeys(path, data)
}

func parseKeys(path string, data []byte) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, fmt.Errorf("gossip key file %s:%d: not base64 (want a %d-byte key, e.g. from `ambient-agent gossip keygen`)", path, line, KeySize)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("gossip key file %s:%d: key is %d bytes, want %d", path, line, len(key), KeySize)
		}
		keys = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("gossip key file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip key file %s: no key", path)
	}
	return keys, nil
}

// newKeyring builds memberlist's keyring: the first key is the primary (sends), all of them decrypt.
func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if i := slices.IndexFunc(keys, func(k []byte) bool { return len(k) != KeySize }); i >= 0 {
		return nil, fmt.Errorf("gossip key %d is %d bytes, want %d", i+1, len(keys[i]), KeySize)
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	return kr, nil
}

// ReloadKeys reads the key file again and installs its keys in the running keyring: new keys are added, the
// file's first key sends, and keys no longer in the file are removed. This is how a key rotates without a
// partition (docs/gossip.md). A file that cannot be read, or holds a bad key or none, changes nothing and is the
// error. It returns how many keys are installed; (0, nil) when the node has no key file (keys given in Options,
// or an unencrypted test mesh).
func (d *Discovery) ReloadKeys() (int, error) {
	if d.opts.KeyFile == "" || d.opts.Keys != nil {
		return 0, nil
	}
	keys, err := ReadKeyFile(d.opts.KeyFile)
	if err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, fmt.Errorf("gossip key file %s holds no key", d.opts.KeyFile)
	}
	if _, err := newKeyring(keys); err != nil { // every key valid before any is installed
		return 0, err
	}
	d.keysMu.Lock()
	defer d.keysMu.Unlock()
	d.keys = keys
	kr := d.keyring
	if kr == nil { // not created yet: it will be with these keys
		return len(keys), nil
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return 0, fmt.Errorf("gossip keyring: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return 0, fmt.Errorf("gossip keyring: %w", err)
	}
	for _, k := range kr.GetKeys() {
		if !slices.ContainsFunc(keys, func(x []byte) bool { return bytes.Equal(x, k) }) {
			if err := kr.RemoveKey(k); err != nil {
				return 0, fmt.Errorf("gossip keyring: %w", err)
			}
		}
	}
	return len(keys), nil
}

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

package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/ambient-agent/ambient-agent/agent/internal/discovery"
)

func gossipCommands() table {
	return table{name: "ambient-agent gossip", cmds: map[string]command{
		"keygen": {"print a new gossip key (base64, 32 bytes), or write it to a new file", runGossipKeygen},
	}}
}

func runGossipKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("gossip keygen", "gossip keygen [-out FILE]", stderr)
	out := fs.String("out", "", "write the key to this new `file` (mode 0600; an existing file is left alone) instead of stdout")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	key := make([]byte, discovery.KeySize)
	if _, err := rand.Read(key); err != nil {
		return failed(stderr, "gossip keygen", err)
	}
	line := base64.StdEncoding.EncodeToString(key) + "\n"
	if *out == "" {
		fmt.Fprint(stdout, line)
		return 0
	}
	if err := writeNewFile(*out, line); err != nil {
		return failed(stderr, "gossip keygen", err)
	}
	fmt.Fprintf(stdout, "wrote a gossip key to %s; copy the file to every host of the mesh (gossip.key_file)\n", *out)
	return 0
}

// writeNewFile creates path with mode 0600 and writes s; it never replaces an existing file, so a key in use is
// not lost by a repeated command.
func writeNewFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; to rotate, put a new key on the first line of it (see docs/gossip.md)", path)
	}
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

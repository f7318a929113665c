package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/vmjoin"
)

func joinCommands() table {
	return table{name: "ambient-agent join", noun: "kind", cmds: map[string]command{
		"istio": {"configure this host from the files of `istioctl x workload entry configure` (docs/interop.md)", runJoinIstio},
	}}
}

// dirsFlag collects repeated -from flags.
type dirsFlag []string

func (d *dirsFlag) String() string     { return strings.Join(*d, ",") }
func (d *dirsFlag) Set(v string) error { *d = append(*d, v); return nil }

func runJoinIstio(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("join istio", "join istio -from DIR [-from DIR...] [-address IP] [-node NAME] [-config FILE] [-istio-dir DIR] [-dry-run] [-force]", stderr)
	var dirs dirsFlag
	fs.Var(&dirs, "from", "a `directory` written by istioctl x workload entry configure (one per WorkloadGroup; repeat for several)")
	address := fs.String("address", "", "this host's `IP` for workloads whose cluster.env has no ISTIO_SVC_IP")
	host, _ := os.Hostname()
	node := fs.String("node", host, "this host's node `name`")
	path := configFlag(fs)
	istioDir := fs.String("istio-dir", filepath.Dir(config.DefaultIstioRootCert), "where the root certificate and the tokens go (`directory`)")
	dryRun := fs.Bool("dry-run", false, "print the configuration; write nothing")
	force := fs.Bool("force", false, "replace an existing configuration file")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	var ip netip.Addr
	if *address != "" {
		var err error
		if ip, err = netip.ParseAddr(*address); err != nil {
			fmt.Fprintf(stderr, "join istio: -address %q is not an IP address\n", *address)
			return 2
		}
	}
	if len(dirs) == 0 {
		fmt.Fprintln(stderr, "join istio: -from DIR is required: the output directory of istioctl x workload entry configure")
		fs.Usage()
		return 2
	}
	j, err := vmjoin.Read(dirs, ip)
	if err != nil {
		fmt.Fprintf(stderr, "join istio: %v\n", err)
		return 1
	}
	paths := vmjoin.Paths{RootCert: filepath.Join(*istioDir, "root-cert.pem"), TokenDir: filepath.Join(*istioDir, "tokens")}
	text := j.Config(*node, paths)
	if _, err := config.Parse(*path, []byte(text)); err != nil {
		fmt.Fprintf(stderr, "join istio: the configuration made from these files is not valid:\n%v\n", err)
		return 1
	}
	if *dryRun {
		fmt.Fprint(stdout, text)
		notes(stdout, j, paths)
		return 0
	}
	if _, err := os.Stat(*path); err == nil && !*force {
		fmt.Fprintf(stderr, "join istio: %s exists; -force replaces it (or -dry-run prints the new one)\n", *path)
		return 1
	}
	if err := writeJoin(j, paths, *path, text); err != nil {
		fmt.Fprintf(stderr, "join istio: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s, %s and %d token(s) under %s\n", *path, paths.RootCert, len(j.Groups), paths.TokenDir)
	notes(stdout, j, paths)
	fmt.Fprintf(stdout, "next: ambient-agent validate -config %s; systemctl restart ambient-agent\n", *path)
	return 0
}

// writeJoin puts the root certificate, the tokens (readable by root only) and the configuration in place.
func writeJoin(j *vmjoin.Join, p vmjoin.Paths, path, text string) error {
	if err := os.MkdirAll(filepath.Dir(p.RootCert), 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(p.RootCert, j.RootCert, 0o644); err != nil {
		return err
	}
	for _, g := range j.Groups {
		tp := p.TokenPath(g)
		if err := os.MkdirAll(filepath.Dir(tp), 0o700); err != nil {
			return err
		}
		if err := writeFileAtomic(tp, append(g.Token, '\n'), 0o600); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(path, []byte(text), 0o640)
}

// writeFileAtomic writes data to a temporary file beside path and renames it into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(f.Name(), mode)); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	// The rename itself survives a power loss once the directory is synced.
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// notes says what the join does not do by itself.
func notes(w io.Writer, j *vmjoin.Join, p vmjoin.Paths) {
	for _, g := range j.Groups {
		if g.AutoRegister == "" {
			fmt.Fprintf(w, "note: %s was made without --autoregister: create the WorkloadEntry with `ambient-agent export kubernetes | kubectl apply -f -` (docs/kubernetes.md)\n", g.Dir)
		}
	}
	fmt.Fprintf(w, "note: the tokens get the first certificates; renewals use the certificates themselves (docs/interop.md). Keep a current token in %s for restarts.\n", p.TokenDir)
}

package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambient-agent/ambient-agent/agent/internal/identity"
	"github.com/ambient-agent/ambient-agent/agent/internal/meshca"
)

func caCommands() table {
	return table{name: "ambient-agent ca", cmds: map[string]command{
		"init":  {"create a mesh root (root-cert.pem, root-key.pem) in a new directory", runCAInit},
		"issue": {"issue a workload certificate into an [identity] dir layout", runCAIssue},
	}}
}

func runCAInit(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ca init", "ca init -dir DIR [-trust-domain TD]", stderr)
	dir := fs.String("dir", "", "`directory` for root-cert.pem and root-key.pem (required)")
	tdName := fs.String("trust-domain", "cluster.local", "the mesh's SPIFFE trust `domain`")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if *dir == "" {
		return usageError(fs, "-dir is required")
	}
	td, err := spiffeid.TrustDomainFromString(*tdName)
	if err != nil || strings.Contains(*tdName, "/") {
		return usageError(fs, fmt.Sprintf("-trust-domain %q is not a valid SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')", *tdName))
	}
	ca, err := meshca.Init(*dir, td)
	if err != nil {
		return failed(stderr, "ca init", err)
	}
	fmt.Fprintf(stdout, "created the root of trust domain %q in %s (%s, %s; serial %s, expires %s)\n",
		td.Name(), *dir, meshca.RootCertFile, meshca.RootKeyFile, ca.Root().SerialNumber.Text(16),
		ca.Root().NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintf(stdout, "keep %s offline; copy only %s to hosts (ca issue does that)\n", meshca.RootKeyFile, meshca.RootCertFile)
	return 0
}

func runCAIssue(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ca issue", "ca issue -dir DIR [-namespace NS] [-service-account SA] [-ttl 720h] [-ip ADDR]... -out OUT", stderr)
	dir := fs.String("dir", "", "the CA `directory` made by ca init (required)")
	ns := fs.String("namespace", identity.DefaultNamespace, "the workload's `namespace`")
	sa := fs.String("service-account", identity.DefaultServiceAccount, "the workload's service `account`")
	ttl := fs.Duration("ttl", meshca.DefaultTTL, "certificate lifetime")
	out := fs.String("out", "", "output `directory`, usable as [identity] dir (required)")
	var ips ipSANsFlag
	fs.Var(&ips, "ip", "also put `ADDR` in the certificate's IP SANs (repeatable, or comma-separated); "+
		"agents then accept gossip claims of the workload's addresses only for those addresses")
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	switch {
	case *dir == "":
		return usageError(fs, "-dir is required")
	case *out == "":
		return usageError(fs, "-out is required")
	case *ttl <= 0:
		return usageError(fs, fmt.Sprintf("-ttl %s is not positive", *ttl))
	}
	ca, err := meshca.Load(*dir)
	if err != nil {
		return failed(stderr, "ca issue", err)
	}
	id, err := identity.IstioID(ca.TrustDomain(), *ns, *sa)
	if err != nil {
		return usageError(fs, err.Error())
	}
	svid, err := ca.Issue(id, *ttl, ips...)
	if err != nil {
		return failed(stderr, "ca issue", err)
	}
	if err := ca.WriteIdentity(*out, svid); err != nil {
		return failed(stderr, "ca issue", err)
	}
	nsName, saName, _ := identity.ParseIstioID(id)
	fmt.Fprintf(stdout, "issued %s%s (serial %s, expires %s) into %s, %s and %s\n", id, ips.describe(),
		svid.Leaf.SerialNumber.Text(16), svid.Leaf.NotAfter.UTC().Format(time.RFC3339),
		identity.ChainPath(*out, nsName, saName), identity.KeyPath(*out, nsName, saName), identity.BundlePath(*out))
	return 0
}

// ipSANsFlag is -ip of ca issue. It takes a comma-separated list too, so that a script can pass a host's
// addresses in one argument; each is checked as it is parsed, so a bad one is a usage error that names it.
type ipSANsFlag []netip.Addr

func (f *ipSANsFlag) String() string {
	s := make([]string, len(*f))
	for i, a := range *f {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (f *ipSANsFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		addr, err := meshca.ParseIPSAN(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		*f = append(*f, addr)
	}
	return nil
}

// describe is how the issue output mentions the IP SANs, so that the operator sees what the certificate claims.
func (f ipSANsFlag) describe() string {
	if len(f) == 0 {
		return ""
	}
	return " with IP SANs " + f.String()
}

func usageError(fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(fs.Output(), "ambient-agent %s: %s\n", fs.Name(), msg)
	fs.Usage()
	return 2
}

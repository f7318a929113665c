// Package vmjoin reads the files `istioctl x workload entry configure` writes for a virtual machine (one directory
// per WorkloadGroup: cluster.env, mesh.yaml, root-cert.pem, istio-token, hosts) and turns them into the agent's
// configuration: [istio] (istiod's address and name, the root certificate, the tokens), [node] (trust domain,
// network, cluster), a [[workload]] per directory, and [dns] capture when istioctl asked for it. It refuses, naming
// the file and the key, what is missing or what two directories disagree on: a host joins one istiod, with one
// root, on one network.
//
// The formats are istioctl's (istio/istio istioctl/pkg/workload/workload.go): cluster.env is sorted KEY=VALUE
// lines, each value quoted for a POSIX shell; mesh.yaml is a MeshConfig fragment with defaultConfig
// (discoveryAddress, proxyMetadata); hosts is "<ip> <istiod host>" lines for /etc/hosts.
package vmjoin

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// Files of one istioctl output directory.
const (
	ClusterEnv = "cluster.env"
	MeshYAML   = "mesh.yaml"
	RootCert   = "root-cert.pem"
	Token      = "istio-token"
	Hosts      = "hosts"
)

// Group is what one directory (one WorkloadGroup) says.
type Group struct {
	Dir            string
	Name           string // the WorkloadGroup's name: the workload's
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
	Address        netip.Addr // ISTIO_SVC_IP, when istioctl was given --internalIP or --externalIP
	Network        string
	ClusterID      string
	TrustDomain    string
	DNSCapture     bool
	AutoRegister   string // ISTIO_META_AUTO_REGISTER_GROUP
	Discovery      string // mesh.yaml defaultConfig.discoveryAddress, host:port
	IstiodIP       netip.Addr
	RootCert       []byte
	Token          []byte
}

// Join is what the directories say together.
type Join struct {
	Groups []Group
	// Address is istiod's address to dial: the hosts file's IP for the discovery host, with its port; ServerName
	// is then the discovery host, which istiod's certificate names. Without a hosts entry, Address is the
	// discovery address and ServerName is empty.
	Address, ServerName string
	Network, ClusterID  string
	TrustDomain         string
	DNSCapture          bool
	RootCert            []byte
}

// Read reads the directories; address is this host's address for the workloads whose cluster.env has none
// (invalid: none given).
func Read(dirs []string, address netip.Addr) (*Join, error) {
	if len(dirs) == 0 {
		return nil, errors.New("no directory: give the output directory of `istioctl x workload entry configure` (-from DIR)")
	}
	j := &Join{}
	var errs []error
	for _, dir := range dirs {
		g, err := readGroup(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !g.Address.IsValid() {
			if !address.IsValid() {
				errs = append(errs, fmt.Errorf("%s: no ISTIO_SVC_IP (istioctl's --internalIP or --externalIP): give this host's address with -address", filepath.Join(dir, ClusterEnv)))
				continue
			}
			g.Address = address
		}
		j.Groups = append(j.Groups, g)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := j.merge(); err != nil {
		return nil, err
	}
	return j, nil
}

// merge checks that the groups agree on what a host has one of, and keeps it.
func (j *Join) merge() error {
	first := j.Groups[0]
	var errs []error
	agree := func(what string, get func(Group) string) string {
		for _, g := range j.Groups[1:] {
			if get(g) != get(first) {
				errs = append(errs, fmt.Errorf("%s: %s %q, but %s says %q: a host joins one istiod, with one root, on one network", g.Dir, what, get(g), first.Dir, get(first)))
			}
		}
		return get(first)
	}
	j.Network = agree("network (ISTIO_META_NETWORK)", func(g Group) string { return g.Network })
	j.ClusterID = agree("cluster (ISTIO_META_CLUSTER_ID)", func(g Group) string { return g.ClusterID })
	j.TrustDomain = agree("trust domain (TRUST_DOMAIN)", func(g Group) string { return g.TrustDomain })
	discovery := agree("istiod (mesh.yaml discoveryAddress)", func(g Group) string { return g.Discovery })
	agree("root certificate", func(g Group) string { return string(g.RootCert) })
	istiodIP := agree("istiod's address (hosts)", func(g Group) string {
		if g.IstiodIP.IsValid() {
			return g.IstiodIP.String()
		}
		return ""
	})
	names := map[string]string{}
	for _, g := range j.Groups {
		if other, ok := names[g.Namespace+"/"+g.Name]; ok {
			errs = append(errs, fmt.Errorf("%s: WorkloadGroup %s/%s again (also %s)", g.Dir, g.Namespace, g.Name, other))
		}
		names[g.Namespace+"/"+g.Name] = g.Dir
		j.DNSCapture = j.DNSCapture || g.DNSCapture
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	j.RootCert = first.RootCert
	j.Address = discovery
	if istiodIP != "" {
		host, port, _ := net.SplitHostPort(discovery)
		j.Address, j.ServerName = net.JoinHostPort(istiodIP, port), host
	}
	return nil
}

func readGroup(dir string) (Group, error) {
	g := Group{Dir: dir}
	read := func(name string, required bool) ([]byte, error) {
		b, err := readRegular(filepath.Join(dir, name))
		if err != nil && (required || !errors.Is(err, os.ErrNotExist)) {
			return nil, err
		}
		return b, nil
	}
	in := func(name string, err error) error { return fmt.Errorf("%s: %w", filepath.Join(dir, name), err) }
	envText, err := read(ClusterEnv, true)
	if err != nil {
		return g, err
	}
	env, err := parseEnv(envText)
	if err != nil {
		return g, in(ClusterEnv, err)
	}
	g.fromEnv(env)
	mesh, err := read(MeshYAML, true)
	if err != nil {
		return g, err
	}
	if g.Discovery, err = discoveryAddress(mesh); err != nil {
		return g, in(MeshYAML, err)
	}
	if g.RootCert, err = read(RootCert, true); err != nil {
		return g, err
	}
	token, err := read(Token, true)
	if err != nil {
		return g, err
	}
	g.Token = bytes.TrimSpace(token)
	hosts, err := read(Hosts, false)
	if err != nil {
		return g, err
	}
	host, _, _ := net.SplitHostPort(g.Discovery)
	if g.IstiodIP, err = hostsEntry(hosts, host); err != nil {
		return g, in(Hosts, err)
	}
	return g, g.validate(env)
}

func (g *Group) fromEnv(env map[string]string) {
	g.Name = env["ISTIO_META_WORKLOAD_NAME"]
	g.Namespace = cmpOr(env["POD_NAMESPACE"], env["ISTIO_NAMESPACE"])
	g.ServiceAccount = env["SERVICE_ACCOUNT"]
	g.Network = env["ISTIO_META_NETWORK"]
	g.ClusterID = env["ISTIO_META_CLUSTER_ID"]
	g.TrustDomain = env["TRUST_DOMAIN"]
	g.DNSCapture = env["ISTIO_META_DNS_CAPTURE"] == "true"
	g.AutoRegister = env["ISTIO_META_AUTO_REGISTER_GROUP"]
	if ip, err := netip.ParseAddr(env["ISTIO_SVC_IP"]); err == nil {
		g.Address = ip
	}
}

// maxFileSize bounds each file read: istioctl's are a few KiB.
const maxFileSize = 1 << 20

// readRegular reads a regular file of at most maxFileSize, never through a symbolic link: the directory may be
// one a user could write to (istioctl's output left in /tmp), and join runs as root, copying what it reads into
// /etc. A link, a FIFO or a device is refused.
func readRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: a symbolic link; give the file itself", path)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	case fi.Size() > maxFileSize:
		return nil, fmt.Errorf("%s: %d bytes, more than an istioctl file holds (%d at most)", path, fi.Size(), maxFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err == nil && len(b) > maxFileSize {
		err = fmt.Errorf("%s: more than %d bytes", path, maxFileSize)
	}
	return b, err
}

// validate checks what the agent needs of a group.
func (g *Group) validate(env map[string]string) error {
	envPath := filepath.Join(g.Dir, ClusterEnv)
	var errs []error
	for key, v := range map[string]string{"ISTIO_META_WORKLOAD_NAME": g.Name, "POD_NAMESPACE": g.Namespace, "SERVICE_ACCOUNT": g.ServiceAccount} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: %s is missing or empty", envPath, key))
		}
	}
	if v := env["ISTIO_SVC_IP"]; v != "" && !g.Address.IsValid() {
		errs = append(errs, fmt.Errorf("%s: ISTIO_SVC_IP %q is not an IP address", envPath, v))
	}
	if v := env["ISTIO_METAJSON_LABELS"]; v != "" {
		if err := json.Unmarshal([]byte(v), &g.Labels); err != nil {
			errs = append(errs, fmt.Errorf("%s: ISTIO_METAJSON_LABELS is not a JSON object of strings: %v", envPath, err))
		}
	}
	if err := checkToken(g.Token); err != nil {
		errs = append(errs, fmt.Errorf("%s: %v", filepath.Join(g.Dir, Token), err))
	}
	root, err := certificatesOnly(g.RootCert)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %v", filepath.Join(g.Dir, RootCert), err))
	}
	g.RootCert = root
	return errors.Join(errs...)
}

// checkToken checks that a token has a JWT's shape (three base64url parts, one line): istioctl writes the token
// it asked the cluster for, and the agent sends it to istiod; anything else is refused.
func checkToken(t []byte) error {
	if len(t) == 0 {
		return errors.New("empty: istioctl writes the token it asked the cluster for (audience istio-ca)")
	}
	parts := bytes.Split(t, []byte("."))
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT (%d parts, want 3)", len(parts))
	}
	for _, p := range parts {
		for _, c := range p {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=') {
				return errors.New("not a JWT (a character outside base64url)")
			}
		}
	}
	return nil
}

// certificatesOnly is the root file's CERTIFICATE blocks, each a CA certificate, re-encoded: anything else in
// it (a key, text) is refused rather than copied into the world-readable root file.
func certificatesOnly(b []byte) ([]byte, error) {
	var out []byte
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, errors.New("something other than PEM blocks in it")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %q block: the root file holds certificates only", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate that does not parse: %v", err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA", c.Subject)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes})...)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

// parseEnv reads cluster.env: KEY=VALUE lines, VALUE as a POSIX shell word (single and double quotes,
// backslashes), as istioctl writes it with shellescape.Quote; blank lines and # comments are skipped.
func parseEnv(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.ContainsAny(key, " \t'\"") {
			return nil, fmt.Errorf("line %d: not KEY=VALUE", n)
		}
		v, err := shellWord(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %v", n, key, err)
		}
		out[key] = v
	}
	return out, sc.Err()
}

// shellWord unquotes one POSIX shell word.
func shellWord(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", errors.New("unterminated single quote")
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 2
		case '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return "", errors.New("unterminated double quote")
			}
			i++
		case '\\':
			if i+1 < len(s) {
				b.WriteByte(s[i+1])
			}
			i += 2
		case ' ', '\t':
			return "", errors.New("a space outside quotes")
		default:
			b.WriteByte(c)
			i++
		}
	}
	if !utf8.ValidString(b.String()) {
		return "", errors.New("not UTF-8")
	}
	return b.String(), nil
}

// discoveryAddress is mesh.yaml's defaultConfig.discoveryAddress, host:port.
func discoveryAddress(b []byte) (string, error) {
	var m struct {
		DefaultConfig struct {
			DiscoveryAddress string `json:"discoveryAddress"`
		} `json:"defaultConfig"`
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return "", err
	}
	a := m.DefaultConfig.DiscoveryAddress
	if a == "" {
		return "", errors.New("defaultConfig.discoveryAddress is missing: istiod's address")
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return "", fmt.Errorf("defaultConfig.discoveryAddress %q is not host:port", a)
	}
	return a, nil
}

// hostsEntry is the address the hosts file gives host (none: invalid).
func hostsEntry(b []byte, host string) (netip.Addr, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 || !slices.Contains(f[1:], host) {
			continue
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			return netip.Addr{}, fmt.Errorf("line %d: %q is not an IP address", n, f[0])
		}
		return ip, nil
	}
	return netip.Addr{}, sc.Err()
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Paths say where the agent's files go.
type Paths struct {
	RootCert string // [istio] root_cert
	TokenDir string // [istio] token_dir
}

// TokenPath is where group g's token goes: <token_dir>/<namespace>/<service account>.
func (p Paths) TokenPath(g Group) string {
	return filepath.Join(p.TokenDir, g.Namespace, g.ServiceAccount)
}

// Config is the agent's configuration file for the join, node the host's name.
func (j *Join) Config(node string, p Paths) string {
	var b strings.Builder
	b.WriteString("# Written by `ambient-agent join istio` from the files of `istioctl x workload entry configure`:\n")
	for _, g := range j.Groups {
		fmt.Fprintf(&b, "#   %q (WorkloadGroup %s/%s)\n", g.Dir, g.Namespace, g.Name)
	}
	fmt.Fprintf(&b, "\n[node]\nname = %s\n", quote(node))
	if j.TrustDomain != "" {
		fmt.Fprintf(&b, "trust_domain = %s\n", quote(j.TrustDomain))
	}
	if j.Network != "" {
		fmt.Fprintf(&b, "network = %s\n", quote(j.Network))
	}
	if j.ClusterID != "" {
		fmt.Fprintf(&b, "cluster_id = %s\n", quote(j.ClusterID))
	}
	b.WriteString("\n[identity]\nsource = \"istio\"\n\n[istio]\nenabled = true\n")
	fmt.Fprintf(&b, "address = %s\n", quote(j.Address))
	if j.ServerName != "" {
		fmt.Fprintf(&b, "server_name = %s\n", quote(j.ServerName))
	}
	fmt.Fprintf(&b, "root_cert = %s\ntoken_dir = %s\n", quote(p.RootCert), quote(p.TokenDir))
	if j.DNSCapture {
		b.WriteString("\n[dns]\ncapture = true\n")
	}
	for _, g := range j.Groups {
		fmt.Fprintf(&b, "\n[[workload]]\nname = %s\nnamespace = %s\nservice_account = %s\naddresses = [%s]\n",
			quote(g.Name), quote(g.Namespace), quote(g.ServiceAccount), quote(g.Address.String()))
		if g.AutoRegister != "" {
			fmt.Fprintf(&b, "auto_register = %s\n", quote(g.AutoRegister))
		}
		if len(g.Labels) > 0 {
			keys := make([]string, 0, len(g.Labels))
			for k := range g.Labels {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, len(keys))
			for i, k := range keys {
				parts[i] = quote(k) + " = " + quote(g.Labels[k])
			}
			fmt.Fprintf(&b, "labels = { %s }\n", strings.Join(parts, ", "))
		}
	}
	return b.String()
}

// quote is s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StartNginx runs nginx in the host, listening on ports, answering every
// request with body. Its access log lines are "<remote_addr> <server_port>".
func (h *Host) StartNginx(body string, ports ...int) *Proc {
	h.lab.t.Helper()
	return h.startNginx(body, "", ports)
}

// StartNginxAllowing is StartNginx whose path /allowed answers the clients in allow only (nginx's own allow and
// deny, by the address of the connection nginx accepted) with its status page ("Active connections: ..."),
// and 403 the others.
func (h *Host) StartNginxAllowing(body string, allow []netip.Addr, ports ...int) *Proc {
	h.lab.t.Helper()
	var loc strings.Builder
	loc.WriteString("    location = /allowed {\n")
	for _, a := range allow {
		fmt.Fprintf(&loc, "      allow %s;\n", a)
	}
	loc.WriteString("      deny all;\n      stub_status;\n    }\n")
	return h.startNginx(body, loc.String(), ports)
}

func (h *Host) startNginx(body, locations string, ports []int) *Proc {
	h.lab.t.Helper()
	dir := filepath.Join(h.Dir, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.lab.t.Fatal(err)
	}
	var listen strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&listen, "    listen %d;\n    listen [::]:%d;\n", p, p)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
  log_format short '$remote_addr $server_port';
  access_log %[1]s/access.log short;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
%[2]s    location / { return 200 "%[3]s\n"; }
%[4]s  }
}
`, dir, listen.String(), body, locations)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		h.lab.t.Fatal(err)
	}
	p := h.Start("nginx", "nginx", "-c", path, "-e", filepath.Join(dir, "error.log"))
	h.WaitListening(ports[0], 10*time.Second)
	return p
}

// StartPeerEcho starts a TCP server on port (IPv4 and IPv6) that answers each connection with the address it
// sees as its peer (getpeername, through socat's SOCAT_PEERADDR) and closes it. PeerEcho reads the answer.
func (h *Host) StartPeerEcho(port int) {
	h.lab.t.Helper()
	echo := "SYSTEM:echo $SOCAT_PEERADDR"
	h.Start("peer-echo-4", "socat", fmt.Sprintf("TCP4-LISTEN:%d,reuseaddr,fork", port), echo)
	h.Start("peer-echo-6", "socat", fmt.Sprintf("TCP6-LISTEN:%d,reuseaddr,fork,ipv6only=1", port), echo)
	h.WaitListening(port, 10*time.Second)
}

// PeerEcho connects from h to a StartPeerEcho server at dst and returns the address the server saw.
func (h *Host) PeerEcho(dst netip.AddrPort) (netip.Addr, error) {
	out, err := h.Run(Timeout(10*time.Second), "nc", "-w", "5", dst.Addr().String(), strconv.Itoa(int(dst.Port())))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("nc %s: %w (%q)", dst, err, out)
	}
	return netip.ParseAddr(strings.Trim(strings.TrimSpace(out), "[]"))
}

// NginxAccessLog returns the access log lines ("<remote_addr> <server_port>").
func (h *Host) NginxAccessLog() []string {
	b, _ := os.ReadFile(filepath.Join(h.Dir, "nginx", "access.log"))
	if s := strings.TrimSpace(string(b)); s != "" {
		return strings.Split(s, "\n")
	}
	return nil
}

// WaitListening waits until something in the host listens on TCP port.
func (h *Host) WaitListening(port int, d time.Duration) {
	h.lab.t.Helper()
	want := fmt.Sprintf(":%d ", port)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err := h.Run(h.lab.ctx(), "ss", "-Htln")
		if err == nil && strings.Contains(out, want) {
			return
		}
	}
	h.lab.t.Fatalf("nothing listens on port %d in %s after %s", port, h.Name, d)
}

// Capture records the TCP traffic of host h as it crosses the lab's switch
// (its bridge port: a bridge device itself does not see frames it forwards
// between ports) until the returned function is called; that function returns
// the pcap file's path.
func (l *Lab) Capture(name string, h *Host) func() string {
	l.t.Helper()
	return l.capture(name, h, "tcp")
}

func (l *Lab) capture(name string, h *Host, filter string) func() string {
	l.t.Helper()
	path := filepath.Join(l.dir, name+".pcap")
	p := l.switchHost().Start("tcpdump-"+name, "tcpdump", "--immediate-mode", "-i", h.Name, "-U", "-n", "-s", "0", "-w", path, filter)
	// tcpdump says "listening on br0" once the capture runs.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(p.Log(), "listening on") {
			break
		}
	}
	return func() string {
		// --immediate-mode hands packets over at once; give the last ones a moment.
		time.Sleep(200 * time.Millisecond)
		p.Kill()
		l.t.Logf("tcpdump on %s: %s", h.Name, strings.TrimSpace(p.Log()))
		return path
	}
}

// PcapSummary prints a pcap file as tcpdump lines.
func (l *Lab) PcapSummary(path string) string {
	out, err := (&Host{lab: l, NS: l.sw}).Run(l.ctx(), "tcpdump", "-r", path, "-n", "-q", "tcp")
	if err != nil {
		l.t.Fatalf("read pcap: %v", err)
	}
	return out
}

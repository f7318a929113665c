package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// StartNginx runs nginx in the host, listening on ports, answering every
// request with body. Its access log lines are "<remote_addr> <server_port>".
func (h *Host) StartNginx(body string, ports ...int) *Proc {
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
  }
}
`, dir, listen.String(), body)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		h.lab.t.Fatal(err)
	}
	p := h.Start("nginx", "nginx", "-c", path, "-e", filepath.Join(dir, "error.log"))
	h.WaitListening(ports[0], 10*time.Second)
	return p
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
	path := filepath.Join(l.dir, name+".pcap")
	sw := &Host{lab: l, Name: "switch", NS: l.sw, Dir: l.dir}
	p := sw.Start("tcpdump-"+name, "tcpdump", "--immediate-mode", "-i", h.Name, "-U", "-n", "-s", "0", "-w", path, "tcp")
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

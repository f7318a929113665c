package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/app"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
	"github.com/ambient-agent/ambient-agent/ports"
)

// controlCall makes one request to the control API and returns the body of a 200 answer; any other answer is an
// error carrying the agent's message.
func controlCall(socket, method, path string, timeout time.Duration) ([]byte, error) {
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := controlClient(socket, timeout).Do(req)
	if err != nil {
		return nil, fmt.Errorf("the agent's control socket %s does not answer (is the agent running, and are you root or in its group? systemctl status ambient-agent): %w", socket, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("control API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if msg == "" {
			msg = resp.Status
		}
		return nil, fmt.Errorf("the agent refused: %s", msg)
	}
	return body, nil
}

// printJSON prints raw JSON from the agent indented, as every -json output is.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runConnections(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("connections", "connections [-socket PATH] [-json]", stderr)
	f := newCLIFlags(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	body, err := controlCall(*f.socket, http.MethodGet, "/connections", 10*time.Second)
	if err != nil {
		return failed(stderr, "connections", err)
	}
	var conns []telemetry.LiveConn
	if err := json.Unmarshal(body, &conns); err != nil {
		return failed(stderr, "connections", fmt.Errorf("control API: bad /connections: %w", err))
	}
	if *f.asJSON {
		if conns == nil {
			conns = []telemetry.LiveConn{}
		}
		if err := printJSON(stdout, conns); err != nil {
			return failed(stderr, "connections", err)
		}
		return 0
	}
	if len(conns) == 0 {
		fmt.Fprintln(stdout, "no open connections")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tSOURCE\tDESTINATION\tROUTE\tSOURCE IDENTITY\tDESTINATION IDENTITY\tSERVICE\tAGE\tSENT\tRECEIVED")
	for _, c := range conns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", c.Direction, c.Src, c.Dst, c.Route, dash(c.SrcIdentity),
			dash(c.DstIdentity), dash(c.DstService), time.Since(c.Since).Round(time.Second), c.BytesSent, c.BytesReceived)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d open\n", len(conns))
	return 0
}

func dash(s string) string {
	if s == "" || s == telemetry.Unknown {
		return "-"
	}
	return s
}

func runProbe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("probe", "probe [-socket PATH] [-json] [-expect SPIFFE-ID] [-as WORKLOAD] IP", stderr)
	f := newCLIFlags(fs)
	expect := fs.String("expect", "", "the SPIFFE `ID` the peer must present (default: any identity of the trust bundle, reported)")
	as := fs.String("as", "", "the local `workload` (name, namespace/name or SPIFFE ID) whose certificate to present (default: the first)")
	pos, code := parseFlagsArgs(fs, args, stdout, 1)
	if code >= 0 {
		return code
	}
	if len(pos) == 0 {
		fmt.Fprintf(stderr, "ambient-agent probe: which peer? give its address (its HBONE port, %d, is the one probed)\n", ports.HBONE)
		fs.Usage()
		return 2
	}
	return probe(*f.socket, pos[0], *expect, *as, *f.asJSON, stdout, stderr)
}

func probe(socket, addr, expect, as string, asJSON bool, stdout, stderr io.Writer) int {
	q := url.Values{"address": {addr}}
	if expect != "" {
		q.Set("expect", expect)
	}
	if as != "" {
		q.Set("as", as)
	}
	body, err := controlCall(socket, http.MethodPost, "/probe?"+q.Encode(), 30*time.Second)
	if err != nil {
		return failed(stderr, "probe", err)
	}
	var res app.ProbeResult
	if err := json.Unmarshal(body, &res); err != nil {
		return failed(stderr, "probe", fmt.Errorf("control API: bad /probe answer: %w", err))
	}
	if asJSON {
		if err := printJSON(stdout, res); err != nil {
			return failed(stderr, "probe", err)
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "Peer:\t%s\nAs:\t%s\n", res.Address, res.Source)
		fmt.Fprintf(tw, "TCP connect:\t%s\n", stepResult(res.Stage == "connect", res.ConnectMs))
		if res.Stage != "connect" {
			fmt.Fprintf(tw, "TLS handshake:\t%s\n", stepResult(res.Stage == "tls", res.HandshakeMs))
		}
		if res.PeerIdentity != "" {
			fmt.Fprintf(tw, "Peer identity:\t%s (%s, ALPN %s)\n", res.PeerIdentity, res.TLSVersion, dash(res.ALPN))
		}
		if res.Stage == "" || res.Stage == "http2" {
			fmt.Fprintf(tw, "HTTP/2:\t%s\n", map[bool]string{true: "ok (the peer answered with its SETTINGS)", false: "FAILED"}[res.HTTP2])
		}
		tw.Flush()
	}
	if !res.OK {
		fmt.Fprintf(stderr, "ambient-agent probe: %s failed: %s\n", res.Stage, res.Error)
		return 1
	}
	return 0
}

func stepResult(failedHere bool, ms float64) string {
	if failedHere {
		return "FAILED"
	}
	return fmt.Sprintf("ok (%.1f ms)", ms)
}

func runLogLevel(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("log-level", "log-level [-socket PATH] [LEVEL]", stderr)
	socket := socketFlag(fs)
	pos, code := parseFlagsArgs(fs, args, stdout, 1)
	if code >= 0 {
		return code
	}
	method, path := http.MethodGet, "/logging"
	if len(pos) == 1 {
		method, path = http.MethodPost, "/logging?"+url.Values{"level": {pos[0]}}.Encode()
	}
	body, err := controlCall(*socket, method, path, 5*time.Second)
	if err != nil {
		return failed(stderr, "log-level", err)
	}
	fmt.Fprint(stdout, string(body))
	return 0
}

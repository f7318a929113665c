package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// gossipKey writes a fresh gossip key for the lab's hosts.
func gossipKey(t *testing.T, l *lab.Lab) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(l.Hosts[0].Dir, "..", "gossip.key")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// meshDump is the part of /config_dump these tests read.
type meshDump struct {
	Services []struct {
		Name      string   `json:"name"`
		Hostname  string   `json:"hostname"`
		Addresses []string `json:"addresses"`
		Waypoint  string   `json:"waypoint"`
		Endpoints []struct {
			Workload string `json:"workload"`
			Healthy  bool   `json:"healthy"`
			Waypoint string `json:"waypoint"`
		} `json:"endpoints"`
	} `json:"services"`
	Waypoints []struct {
		Name string `json:"name"`
		Node string `json:"node"`
	} `json:"waypoints"`
	Gateways []struct {
		Network string `json:"network"`
		Node    string `json:"node"`
	} `json:"gateways"`
	// Conflicts are address conflicts (state.Conflict).
	Conflicts []struct {
		Address string `json:"address"`
		Loser   string `json:"loser"`
	} `json:"conflicts"`
	// GossipSettled: the agent's view counts as established (owners keep what they hold).
	GossipSettled bool `json:"gossipSettled"`
	Workloads     []struct {
		UID         string `json:"uid"`
		Name        string `json:"name"`
		UseWaypoint string `json:"useWaypoint"`
	} `json:"workloads"`
}

// workloadWaypoint is the use_waypoint of the first workload named name.
func (m meshDump) workloadWaypoint(name string) string {
	for _, w := range m.Workloads {
		if w.Name == name {
			return w.UseWaypoint
		}
	}
	return ""
}

func readMesh(a *lab.Agent) (meshDump, error) {
	var d meshDump
	body, err := a.Admin("/config_dump")
	if err != nil {
		return d, err
	}
	return d, json.Unmarshal([]byte(body), &d)
}

// waitMesh waits until the agent's view satisfies ok.
// gossipConverges bounds how long a changed record takes to reach every member: at once by broadcast, which may
// miss one, else by memberlist's next push/pull (every 30 s).
const gossipConverges = 60 * time.Second

func waitMesh(t *testing.T, a *lab.Agent, d time.Duration, what string, ok func(meshDump) bool) meshDump {
	t.Helper()
	deadline := time.Now().Add(d)
	var m meshDump
	var err error
	for time.Now().Before(deadline) {
		if m, err = readMesh(a); err == nil && ok(m) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: agent on %s sees %+v (%v) after %s", what, a.Host.Name, m, err, d)
	return m
}

// serviceVIP is the first VIP of the named service in m, or "".
func (m meshDump) serviceVIP(name string) string {
	for _, s := range m.Services {
		if s.Name == name && len(s.Addresses) > 0 {
			return s.Addresses[0]
		}
	}
	return ""
}

// waitCount waits until the agent's log has at least n lines with every one of subs.
func waitCount(t *testing.T, a *lab.Agent, n int, d time.Duration, subs ...string) int {
	t.Helper()
	got := 0
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = countLines(a.Log(), subs...); got >= n {
			return got
		}
	}
	t.Fatalf("agent on %s logged %d lines with %q, want %d:\n%s", a.Host.Name, got, subs, n, a.Log())
	return got
}

func mustCurl(t *testing.T, h *lab.Host, url, want string) {
	t.Helper()
	out, err := curl(h, url)
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("curl %s from %s: %v %q, want %q", url, h.Name, err, out, want)
	}
}

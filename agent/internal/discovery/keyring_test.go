package discovery

import (
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadKeyFile(t *testing.T) {
	k1, k2 := base64.StdEncoding.EncodeToString(testKey), base64.StdEncoding.EncodeToString(otherKey)
	keys, err := ReadKeyFile(writeFile(t, "# rotated 2026-11-01\n"+k2+"\n\n  "+k1+"  \n"))
	if err != nil || len(keys) != 2 || string(keys[0]) != string(otherKey) || string(keys[1]) != string(testKey) {
		t.Fatalf("ReadKeyFile = %d keys, %v", len(keys), err)
	}
	for _, c := range []struct{ content, want string }{
		{k1 + "\nnot-base64!\n", ":2: not base64"},
		{"# only a comment\n" + base64.StdEncoding.EncodeToString([]byte("short")), ":2: key is 5 bytes, want 32"},
		{"\n# nothing\n", "no key"},
	} {
		path := writeFile(t, c.content)
		_, err := ReadKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), path+c.want) && !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadKeyFile(%q) = %v, want %q", c.content, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), k1) {
			t.Errorf("an error shows a key: %v", err)
		}
	}
	if _, err := ReadKeyFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	base := func() Options {
		return Options{NodeName: "vm-1", Bind: netip.MustParseAddrPort("127.0.0.1:7946"), Keys: [][]byte{testKey}, Trust: testTrust()}
	}
	missing := filepath.Join(t.TempDir(), "missing.key")
	for _, c := range []struct {
		name string
		edit func(*Options)
		want string // "" means valid
	}{
		{"valid", func(*Options) {}, ""},
		{"no key", func(o *Options) { o.Keys = nil }, "encryption is required"},
		{"missing key file", func(o *Options) { o.Keys, o.KeyFile = nil, missing }, "missing.key"},
		{"dev mode without a key file", func(o *Options) { o.Keys, o.KeyFile, o.InsecureDevMode = nil, missing, true }, ""},
		{"short key", func(o *Options) { o.Keys = [][]byte{[]byte("short")} }, "key 1 is 5 bytes"},
		{"bad node name", func(o *Options) { o.NodeName = "VM_1" }, "not a DNS label"},
		{"no bind", func(o *Options) { o.Bind = netip.AddrPort{} }, "no bind address"},
		{"v6 any without advertise", func(o *Options) { o.Bind = netip.MustParseAddrPort("[::]:7946") }, "needs an advertise"},
		{"unspecified advertise", func(o *Options) { o.Advertise = netip.MustParseAddrPort("0.0.0.0:7946") }, "unspecified"},
		{"empty seed", func(o *Options) { o.Join = []string{""} }, "seed 1 is empty"},
		{"negative grace", func(o *Options) { o.GracePeriod = -1 }, "negative grace"},
	} {
		o := base()
		c.edit(&o)
		_, err := New(o)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: New = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestSetLocal(t *testing.T) {
	d, err := New(Options{NodeName: "vm-1", Bind: netip.MustParseAddrPort("127.0.0.1:0"), Keys: [][]byte{testKey}, AgentVersion: "9.9", Trust: testTrust()})
	if err != nil {
		t.Fatal(err)
	}
	r := fullRecord()
	r.Node = ""
	if err := d.SetLocal(*r); err != nil {
		t.Fatal(err)
	}
	first, _ := d.Local()
	if first.Node != "vm-1" || first.AgentVersion != "1.2.3" || first.Version == 0 {
		t.Errorf("local record %+v", first)
	}
	// The caller's record is copied: changing it changes nothing published.
	r.Workloads[0].Labels["app"] = "changed"
	if l, _ := d.Local(); l.Workloads[1].Labels["app"] != "web" { // sorted: db, web
		t.Error("SetLocal kept a reference to the caller's labels")
	}
	// The same content again is not a new version; new content is a newer one.
	if err := d.SetLocal(*fullRecord()); err != nil {
		t.Fatal(err)
	}
	if l, _ := d.Local(); l.Version != first.Version {
		t.Error("an unchanged record was republished")
	}
	if err := d.SetLocal(Record{}); err != nil {
		t.Fatal(err)
	}
	if l, _ := d.Local(); l.Version <= first.Version || l.AgentVersion != "9.9" {
		t.Errorf("new record: version %d after %d, agent %q", l.Version, first.Version, l.AgentVersion)
	}
	// Refused records leave the published one in place.
	bad := fullRecord()
	bad.Workloads[0].Addresses = nil
	for _, r := range []Record{{Node: "vm-2"}, *bad, *testRecord(1, MaxWorkloads+1)} {
		if err := d.SetLocal(r); err == nil {
			t.Errorf("SetLocal accepted %d workloads of node %q", len(r.Workloads), r.Node)
		}
	}
	if l, _ := d.Local(); len(l.Workloads) != 0 {
		t.Error("a refused record replaced the published one")
	}
}

// TestPublishPace: this node's record changes are paced (Tuning.PublishBurst, PublishEvery): past the burst a
// change waits for its turn, and is then published with whatever followed it, by the maintenance tick.
func TestPublishPace(t *testing.T) {
	n := startNode(t, "n0", testRecord(0, 1), func(_ *testNode, o *Options) {
		o.Tuning.PublishBurst, o.Tuning.PublishEvery = 2, 2*time.Second
	})
	workloads := func() int {
		l, _ := n.d.Local()
		return len(l.Workloads)
	}
	waitFor(t, 5*time.Second, "the first record is published", func() bool { return workloads() == 1 })
	time.Sleep(4 * time.Second) // the bucket fills again
	for i := 2; i <= 6; i++ {
		if err := n.d.SetLocal(*testRecord(0, i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := workloads(); got != 3 {
		t.Fatalf("after five changes at once the record has %d workloads, want 3: two changes (the burst) published, three waiting", got)
	}
	took := waitFor(t, 5*time.Second, "the last change is published", func() bool { return workloads() == 6 })
	if took < time.Second {
		t.Errorf("the waiting changes were published %s later, before their turn (one every 2s)", took)
	}
}

package discovery

import (
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"
)

// outsiderKeptOut checks, for a while, that the good nodes never admit the outsider nor use its records, and
// that the outsider learns nothing.
func outsiderKeptOut(t *testing.T, outsider *testNode, good ...*testNode) {
	t.Helper()
	holdsFor(t, 5*time.Second, "the outsider stays out", func() bool {
		for _, n := range good {
			for _, m := range n.d.Members() {
				if m.Name == outsider.name {
					t.Errorf("%s lists %s as a member: %+v", n.name, outsider.name, m)
					return false
				}
			}
			if n.hasWorkload(outsider.name + "/default/w0") {
				t.Errorf("%s uses %s's workload", n.name, outsider.name)
				return false
			}
		}
		return len(outsider.d.Members()) == 1 && len(outsider.d.Workloads()) == 0
	})
	if len(outsider.logs.find("no seed answered")) == 0 {
		t.Errorf("the outsider did not report its failed joins: %v", outsider.logs.find(""))
	}
}

func TestWrongKeyIsNotAdmitted(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1))
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a))
	waitFor(t, 20*time.Second, "a and b converge", func() bool { return a.hasWorkload("b/default/w0") && b.hasWorkload("a/default/w0") })

	mallory := startNode(t, "mallory", testRecord(3, 1), withSeeds(a, b), withKeys(otherKey))
	outsiderKeptOut(t, mallory, a, b)
	if len(a.logs.find("memberlist")) == 0 {
		t.Errorf("a did not warn about the undecryptable traffic")
	}
	t.Logf("a logged: %v", a.logs.find("memberlist"))
}

func TestPlaintextNodeIsNotAdmitted(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1))
	eve := startNode(t, "eve", testRecord(3, 1), withSeeds(a), withKeys(), withDevMode)
	outsiderKeptOut(t, eve, a)
}

// Rotation: add the new key everywhere as a secondary, then make it primary node by node, then drop the old one.
// Nodes in neighbouring stages understand each other.
func TestKeyRotation(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	a := startNode(t, "a", testRecord(1, 1), withKeys(testKey, otherKey))               // stage 1: old primary, new accepted
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a), withKeys(otherKey, testKey)) // stage 2: new primary
	waitFor(t, 20*time.Second, "stages 1 and 2 converge", func() bool {
		return a.hasWorkload("b/default/w0") && b.hasWorkload("a/default/w0")
	})
	c := startNode(t, "c", testRecord(3, 1), withSeeds(b), withKeys(otherKey)) // stage 3: old key gone
	waitFor(t, 20*time.Second, "stages 2 and 3 converge", func() bool {
		return b.hasWorkload("c/default/w0") && c.hasWorkload("b/default/w0")
	})
	if c.hasWorkload("a/default/w0") && len(c.d.Members()) != 3 {
		t.Error("c uses a's record without knowing a")
	}
}

// Rotation by the key file and a reload (ReloadKeys), as docs/gossip.md tells operators: the new key second on
// every node, then first, then alone. Afterwards a node with only the new key joins, one with only the old key
// does not, and a key file that does not read changes nothing.
func TestKeyRotationByReload(t *testing.T) {
	leak.AtCleanup(t, discoveryLeaks)
	old, fresh := base64.StdEncoding.EncodeToString(testKey), base64.StdEncoding.EncodeToString(otherKey)
	files := map[string]string{}
	withKeyFile := func(n *testNode, o *Options) {
		o.Keys, o.KeyFile = nil, writeFile(t, old+"\n")
		files[n.name] = o.KeyFile
	}
	a := startNode(t, "a", testRecord(1, 1), withKeyFile)
	b := startNode(t, "b", testRecord(2, 1), withSeeds(a), withKeyFile)
	waitFor(t, 20*time.Second, "a and b converge", func() bool {
		return a.hasWorkload("b/default/w0") && b.hasWorkload("a/default/w0")
	})
	for _, content := range []string{old + "\n" + fresh + "\n", fresh + "\n" + old + "\n", fresh + "\n"} {
		for _, n := range []*testNode{a, b} {
			if err := os.WriteFile(files[n.name], []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if k, err := n.d.ReloadKeys(); err != nil || k != strings.Count(content, "\n") {
				t.Fatalf("ReloadKeys on %s: %d keys, %v", n.name, k, err)
			}
		}
	}
	if err := os.WriteFile(files["a"], []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.d.ReloadKeys(); err == nil || strings.Contains(err.Error(), fresh) {
		t.Errorf("ReloadKeys of a bad file: %v, want an error that shows no key", err)
	}
	c := startNode(t, "c", testRecord(3, 1), withSeeds(a), withKeys(otherKey))
	waitFor(t, 20*time.Second, "c, with only the new key, joins", func() bool {
		return a.hasWorkload("c/default/w0") && c.hasWorkload("b/default/w0")
	})
	m := startNode(t, "m", testRecord(4, 1), withSeeds(a), withKeys(testKey))
	time.Sleep(3 * time.Second)
	if a.hasWorkload("m/default/w0") || m.hasWorkload("a/default/w0") {
		t.Error("a node with only the retired key was admitted")
	}
}

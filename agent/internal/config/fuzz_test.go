package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds any bytes to the config file's parser: it never panics; a file it refuses gets a
// non-empty error (each problem with a message); a file it accepts is a config that parses the same way twice
// and differs from itself in nothing.
func FuzzParse(f *testing.F) {
	shipped, err := os.ReadFile(filepath.Join("..", "..", "..", "conf", "config.toml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(shipped),
		"[node]\nname = \"h1\"\n",
		"[[workload]]\nname = \"web\"\nservice_account = \"web\"\naddresses = [\"10.0.0.1\"]\n",
		"[gossip]\nkey_file = \"/etc/ambient-agent/gossip.key\"\njoin = [\"10.0.0.2\"]\n",
		"[node]\nname = 3\ndrain_timeout = \"1x\"\n",
		"[[service]]\nname = \"echo\"\nports = [{ port = 80, target_port = 8080, app_protocol = \"http\" }]\nworkloads = [\"web\"]\n",
		"[istio]\naddress = \"istiod.istio-system.svc:15012\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("f.toml", src)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("an empty error for %q", src)
			}
			var ps Problems
			if errors.As(err, &ps) {
				if len(ps) == 0 {
					t.Fatalf("no problems listed for %q", src)
				}
				for _, p := range ps {
					if p.Msg == "" {
						t.Fatalf("a problem without a message for %q: %+v", src, p)
					}
				}
			}
			return
		}
		if cfg == nil {
			t.Fatalf("no config and no error for %q", src)
		}
		again, err := Parse("f.toml", src)
		if err != nil {
			t.Fatalf("accepted once, refused the second time: %v", err)
		}
		if d := Diff(cfg, again); len(d) != 0 {
			t.Fatalf("the same file parsed twice differs: %v", d)
		}
	})
}

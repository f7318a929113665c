package dns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzServeDNS feeds raw messages to the handler, as UDP or TCP queries: it must
// never panic, and whatever it answers is a well-formed response to the query,
// with its ID, that fits the client's UDP size. There is no upstream (an empty
// resolv.conf), so other names get SERVFAIL at once. The seeds are in
// testdata/fuzz/FuzzServeDNS.
func FuzzServeDNS(f *testing.F) {
	conf := filepath.Join(f.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		f.Fatal(err)
	}
	s, err := New(Options{
		Listen: netip.MustParseAddrPort("127.0.0.1:0"), ResolvConf: conf,
		Lookup: meshLookup(mesh), Search: search,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	q, _ := question("reviews.", mdns.TypeA).Pack()
	f.Add(q, false)

	f.Fuzz(func(t *testing.T, raw []byte, overTCP bool) {
		resp := s.handle(context.Background(), raw, overTCP, netip.MustParseAddr("127.0.0.1"))
		if resp == nil {
			if len(raw) >= headerLen && raw[2]&bitQR == 0 {
				t.Fatalf("no answer to a query")
			}
			return
		}
		m := new(mdns.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("answer does not parse: %v\n%x", err, resp)
		}
		if !m.Response || resp[0] != raw[0] || resp[1] != raw[1] {
			t.Fatalf("answer is not a response with the query's ID: %v", m)
		}
		size := mdns.MinMsgSize
		req := new(mdns.Msg)
		if req.Unpack(raw) == nil && req.IsEdns0() != nil {
			size = max(size, int(req.IsEdns0().UDPSize()))
		}
		if !overTCP && len(resp) > size {
			t.Fatalf("UDP answer of %d bytes, the client takes %d", len(resp), size)
		}
	})
}

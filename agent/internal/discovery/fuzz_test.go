package discovery

import (
	"bytes"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// FuzzDecodeRecord: any input either decodes to a valid record, whose canonical encoding decodes to the same
// record, or is dropped with a reason from the closed vocabulary. Never a panic, never a partial record. A
// decoded record's proofs are checked too: they verify only when unchanged from a signed seed.
// Seeds: testdata/fuzz/FuzzDecodeRecord and the ones added here, signed ones among them.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(fullRecord()))
	f.Add(encodeRecord(&Record{Node: "n"}))
	f.Add(encodeRecord(testRecord(1, 3)))
	f.Add(signed(f, testRecord(1, 3)))
	f.Add(signed(f, fullRecord()))
	trust := testTrust()
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := decodeRecord(raw)
		if err == nil {
			if p, perr := verifyProofs(r, raw[:r.signedLen], &trust, time.Now()); perr == nil && len(r.Proofs) > 0 && !p.signed {
				t.Fatal("proofs verified but the record is not marked signed")
			} else if perr != nil && !IsRejection(reasonOf(perr)) {
				t.Fatalf("proof reason %q outside the vocabulary: %v", reasonOf(perr), perr)
			}
			r.signedLen, r.Proofs = 0, nil // the canonical encoding below has no proofs
		}
		if err != nil {
			if r != nil {
				t.Fatal("a dropped record was returned")
			}
			switch reasonOf(err) {
			case reasonMalformed, reasonTooLarge, reasonIncompatible, reasonInvalid, reasonBadProof:
			default:
				t.Fatalf("reason %q outside the vocabulary: %v", reasonOf(err), err)
			}
			return
		}
		if err := validateRecord(r); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
		again, err := decodeRecord(encodeRecord(r))
		if again != nil {
			again.signedLen = 0
		}
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding changed the record: %v\n%+v\n%+v", err, r, again)
		}
	})
}

// FuzzReceive feeds arbitrary bytes to every entry point memberlist calls with network data: user messages,
// push/pull state and node metadata. Nothing may panic, and no record may come into use: no node advertises one
// that matches.
func FuzzReceive(f *testing.F) {
	f.Add(encodeMessage(kindBroadcast, encodeRecord(fullRecord())))
	f.Add(encodeMessage(kindBroadcast, signed(f, fullRecord())))
	f.Add(encodeState([][]byte{encodeRecord(fullRecord()), []byte("x")}))
	f.Add(encodeRequest(request{from: "vm-2", addr: netip.MustParseAddrPort("10.0.0.2:7946")}))
	f.Add(encodeMeta(advertOf([]byte("r"), 1)))
	big := fullRecord()
	big.Node = "vm-1"
	f.Add(fragments("vm-1", 1, encodeRecord(big))[0])
	f.Add(fragments("vm-1", 1, bytes.Repeat([]byte{0xA6}, 20000))[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := New(Options{NodeName: "self", Bind: netip.MustParseAddrPort("127.0.0.1:0"), InsecureDevMode: true, Trust: testTrust()})
		if err != nil {
			t.Fatal(err)
		}
		g := &delegate{d}
		g.NotifyJoin(&memberlist.Node{Name: "vm-1", Addr: net.IPv4(10, 0, 0, 1), Port: 7946, Meta: b})
		g.NotifyMsg(b)
		g.MergeRemoteState(b, false)
		g.NotifyUpdate(&memberlist.Node{Name: "vm-2", Addr: net.IPv4(10, 0, 0, 2), Port: 7946, Meta: b})
		g.NotifyLeave(&memberlist.Node{Name: "vm-1"})
		if len(d.Workloads()) != 0 {
			t.Fatalf("a record came into use: %+v", d.Records())
		}
		_ = g.LocalState(false)
	})
}

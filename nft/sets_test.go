package nft

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/nftables"
)

func TestOutermost(t *testing.T) {
	got := outermost(prefixes("10.1.0.0/16", "10.0.0.0/8", "10.1.2.0/24", "11.0.0.0/8", "9.0.0.0/8", "10.0.0.0/8"))
	want := prefixes("9.0.0.0/8", "10.0.0.0/8", "11.0.0.0/8")
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestAfterPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix, next string // "" when the prefix runs to the last address
	}{
		{"10.0.0.0/8", "11.0.0.0"},
		{"192.168.1.7/32", "192.168.1.8"},
		{"0.0.0.0/0", ""},
		{"255.255.255.0/24", ""},
		{"fd00::/8", "fe00::"},
		{"::/0", ""},
		{"2001:db8::/32", "2001:db9::"},
	} {
		next, ok := afterPrefix(netip.MustParsePrefix(tc.prefix))
		switch {
		case tc.next == "" && ok:
			t.Errorf("afterPrefix(%s) = %s, want none", tc.prefix, next)
		case tc.next != "" && (!ok || next != netip.MustParseAddr(tc.next)):
			t.Errorf("afterPrefix(%s) = %s, %v; want %s", tc.prefix, next, ok, tc.next)
		}
	}
}

func TestIntervalElements(t *testing.T) {
	elems := prefixSet("s", false, prefixes("10.0.0.0/8", "11.0.0.0/8", "255.0.0.0/8")).netlinkElements()
	want := []nftables.SetElement{
		{Key: []byte{0, 0, 0, 0}, IntervalEnd: true},
		{Key: []byte{10, 0, 0, 0}},
		{Key: []byte{11, 0, 0, 0}, IntervalEnd: true},
		{Key: []byte{11, 0, 0, 0}},
		{Key: []byte{12, 0, 0, 0}, IntervalEnd: true},
		{Key: []byte{255, 0, 0, 0}}, // open: runs to the last address
	}
	if len(elems) != len(want) {
		t.Fatalf("got %d elements %v, want %v", len(elems), elems, want)
	}
	for i := range want {
		if !bytes.Equal(elems[i].Key, want[i].Key) || elems[i].IntervalEnd != want[i].IntervalEnd {
			t.Errorf("element %d = %v, want %v", i, elems[i], want[i])
		}
	}
	// A range from the zero address needs no leading end.
	if e := prefixSet("s", false, prefixes("0.0.0.0/0")).netlinkElements(); len(e) != 1 || e[0].IntervalEnd {
		t.Errorf("0.0.0.0/0: got %v, want one start element", e)
	}
}

package nft

import (
	"encoding/binary"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The DNS table as rendered; the kernel tests of package capture check that nft
// lists what was installed exactly so.
func TestRenderDNS(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec DNSSpec
		want string
	}{
		{"defaults", DNSSpec{}, `table inet ambient_agent_dns {
	flags owner

	chain output {
		type nat hook output priority -101; policy accept;
		meta mark & 0x00000539 == 0x00000539 return comment "the DNS proxy's own queries"
		meta nfproto ipv6 return comment "the proxy does not listen on ::1"
		udp dport 53 redirect to :15053 comment "to the DNS proxy"
		tcp dport 53 redirect to :15053 comment "to the DNS proxy"
	}
}
`},
		{"ipv6", DNSSpec{Mark: 0x10000, Port: 16053, IPv6: true}, `table inet ambient_agent_dns {
	flags owner

	chain output {
		type nat hook output priority -101; policy accept;
		meta mark & 0x00010000 == 0x00010000 return comment "the DNS proxy's own queries"
		udp dport 53 redirect to :16053 comment "to the DNS proxy"
		tcp dport 53 redirect to :16053 comment "to the DNS proxy"
	}
}
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := RenderDNS(tc.spec)
			if err != nil {
				t.Fatalf("RenderDNS: %v", err)
			}
			if got := rs.String(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestRenderDNSRefusesPort53(t *testing.T) {
	if _, err := RenderDNS(DNSSpec{Port: 53}); err == nil || !strings.Contains(err.Error(), "Port 53") {
		t.Fatalf("RenderDNS: got %v, want an error naming Port 53", err)
	}
}

// TestDNSBatchFraming reads the install batch back as the kernel parses it: one
// atomic batch, every message asking for an answer, the table created exclusively
// with the owner flag.
func TestDNSBatchFraming(t *testing.T) {
	rs, err := RenderDNS(DNSSpec{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := rs.installBatch()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseNetlinkMessage(b.encode(100))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	nft := func(typ int) uint16 { return uint16(unix.NFNL_SUBSYS_NFTABLES<<8 | typ) }
	wantTypes := []uint16{
		unix.NFNL_MSG_BATCH_BEGIN, nft(unix.NFT_MSG_NEWTABLE), nft(unix.NFT_MSG_NEWCHAIN),
		nft(unix.NFT_MSG_NEWRULE), nft(unix.NFT_MSG_NEWRULE), nft(unix.NFT_MSG_NEWRULE), nft(unix.NFT_MSG_NEWRULE),
		unix.NFNL_MSG_BATCH_END,
	}
	if len(msgs) != len(wantTypes) {
		t.Fatalf("%d messages, want %d", len(msgs), len(wantTypes))
	}
	for i, m := range msgs {
		h := m.Header
		if h.Type != wantTypes[i] || h.Seq != uint32(100+i) {
			t.Errorf("message %d: type 0x%x seq %d, want type 0x%x seq %d", i, h.Type, h.Seq, wantTypes[i], 100+i)
		}
		delimiter := i == 0 || i == len(msgs)-1
		if acked := h.Flags&unix.NLM_F_ACK != 0; acked == delimiter {
			t.Errorf("message %d: asks for an answer: %v", i, acked)
		}
		family, resID := m.Data[0], binary.BigEndian.Uint16(m.Data[2:4])
		if delimiter && (family != unix.AF_UNSPEC || resID != unix.NFNL_SUBSYS_NFTABLES) {
			t.Errorf("message %d: family %d res_id %d, want 0 and the nf_tables subsystem", i, family, resID)
		}
		if !delimiter && family != unix.NFPROTO_INET {
			t.Errorf("message %d: family %d, want inet", i, family)
		}
	}
	table := msgs[1]
	if f := table.Header.Flags; f&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != unix.NLM_F_CREATE|unix.NLM_F_EXCL {
		t.Errorf("table message flags 0x%x: want CREATE|EXCL", f)
	}
	attrs := parseAttrs(t, table.Data[4:])
	if got := string(attrs[unix.NFTA_TABLE_NAME]); got != DNSTableName+"\x00" {
		t.Errorf("table name %q", got)
	}
	if got := binary.BigEndian.Uint32(attrs[unix.NFTA_TABLE_FLAGS]); got != 0x2 {
		t.Errorf("table flags 0x%x, want NFT_TABLE_F_OWNER (0x2)", got)
	}
}

// parseAttrs reads one level of netlink attributes, by type.
func parseAttrs(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	out := map[uint16][]byte{}
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("attribute header cut short: %x", b)
		}
		l, typ := int(binary.NativeEndian.Uint16(b)), binary.NativeEndian.Uint16(b[2:])
		if l < 4 || l > len(b) {
			t.Fatalf("attribute length %d of %d bytes", l, len(b))
		}
		out[typ&^unix.NLA_F_NESTED] = b[4:l]
		b = b[min((l+3)&^3, len(b)):]
	}
	return out
}

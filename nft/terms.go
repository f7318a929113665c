package nft

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// term is one piece of a rule: a match or a statement, as the kernel expressions
// that implement it and as the text `nft list` prints for them. Each constructor
// below writes both side by side, so the golden text describes what is sent; a
// kernel test compares the text with what nft prints back.
type term struct {
	text  string
	exprs []expr.Any
}

// All our terms work in register 1; nothing needs more.
const reg = 1

// ifNameSize is IFNAMSIZ: interface names are compared as 16 NUL-padded bytes.
const ifNameSize = 16

// markHasBits matches packets whose mark has all the bits of mark set, whatever
// other bits another firewall may have added.
func markHasBits(mark uint32) term {
	m := binary.NativeEndian.AppendUint32(nil, mark)
	if mark == 0xffffffff { // no bit to mask off; nft prints it as a plain compare
		return term{
			text: fmt.Sprintf("meta mark 0x%08x", mark),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: m},
			},
		}
	}
	return term{
		text: fmt.Sprintf("meta mark & 0x%08x == 0x%08x", mark, mark),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: m, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: m},
		},
	}
}

func outputInterface(name string) term {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return term{
		text: fmt.Sprintf("oifname %q", name),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: b},
		},
	}
}

// daddrIn matches the destination address against an address set of one family.
// In an inet table the family check comes first, as nft adds it.
func daddrIn(s set) term {
	proto, word, offset, size := byte(unix.NFPROTO_IPV4), "ip", uint32(16), uint32(4)
	if s.keyType.Bytes == 16 {
		proto, word, offset, size = unix.NFPROTO_IPV6, "ip6", 24, 16
	}
	return term{
		text: fmt.Sprintf("%s daddr @%s", word, s.name),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
			lookup(s),
		},
	}
}

func tcpDportIn(s set) term {
	return term{
		text: "tcp dport @" + s.name,
		exprs: append(isTCP().exprs,
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			lookup(s),
		),
	}
}

// socketUIDIn and socketGIDIn match the owner of the sending socket.
func socketUIDIn(s set) term {
	return term{
		text:  "meta skuid @" + s.name,
		exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeySKUID, Register: reg}, lookup(s)},
	}
}

func socketGIDIn(s set) term {
	return term{
		text:  "meta skgid @" + s.name,
		exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeySKGID, Register: reg}, lookup(s)},
	}
}

// socketCgroupIs matches sockets opened in the cgroup v2 directory g or below it:
// the kernel loads the id of the socket's cgroup's ancestor at g's level (8 bytes,
// host order) and compares it with g's id. nft prints the directory's path when
// it finds a directory with that id under /sys/fs/cgroup, else the id.
func socketCgroupIs(g CgroupMatch) term {
	dir := strconv.FormatUint(g.ID, 10)
	if g.Path != "" {
		dir = `"` + g.Path + `"`
	}
	return term{
		text: fmt.Sprintf("socket cgroupv2 level %d %s", g.Level, dir),
		exprs: []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: g.Level, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binary.NativeEndian.AppendUint64(nil, g.ID)},
		},
	}
}

func isTCP() term {
	return term{
		text: "meta l4proto tcp",
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
		},
	}
}

func lookup(s set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg, SetName: s.name, SetID: s.id}
}

// bypass leaves our chain: the packet is not captured.
func bypass() term {
	return term{text: "return", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
}

// redirectTo rewrites the destination to a local address (127.0.0.1 / ::1 for
// locally originated packets, the receiving interface's primary address for
// arriving ones) and port. It must follow a TCP match.
func redirectTo(port uint16) term {
	return term{
		text: fmt.Sprintf("redirect to :%d", port),
		exprs: []expr.Any{
			&expr.Immediate{Register: reg, Data: binary.BigEndian.AppendUint16(nil, port)},
			&expr.Redir{RegisterProtoMin: reg, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		},
	}
}

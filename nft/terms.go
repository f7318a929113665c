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
	return markTest("meta mark", &expr.Meta{Key: expr.MetaKeyMARK, Register: reg}, mark, expr.CmpOpEq)
}

// socketMarkLacks matches packets for which the kernel found a local socket whose
// mark lacks some bit of mark. Without a socket (no listener, or a connection
// still in its handshake) it does not match: the socket expression breaks the
// rule. Setting a socket's mark needs CAP_NET_ADMIN (or CAP_NET_RAW), so an
// unprivileged process cannot pass for the agent.
func socketMarkLacks(mark uint32) term {
	return markTest("socket mark", &expr.Socket{Key: expr.SocketKeyMark, Register: reg}, mark, expr.CmpOpNeq)
}

// markTest compares the mark that load puts in the register with mark: whether
// it has (op ==) or lacks (op !=) all of mark's bits.
func markTest(what string, load expr.Any, mark uint32, op expr.CmpOp) term {
	m := binary.NativeEndian.AppendUint32(nil, mark)
	cmp := &expr.Cmp{Op: op, Register: reg, Data: m}
	if mark == 0xffffffff { // no bit to mask off; nft prints it as a plain compare
		text := fmt.Sprintf("%s 0x%08x", what, mark)
		if op == expr.CmpOpNeq {
			text = fmt.Sprintf("%s != 0x%08x", what, mark)
		}
		return term{text: text, exprs: []expr.Any{load, cmp}}
	}
	opText := "=="
	if op == expr.CmpOpNeq {
		opText = "!="
	}
	return term{
		text: fmt.Sprintf("%s & 0x%08x %s 0x%08x", what, mark, opText, mark),
		exprs: []expr.Any{
			load,
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: m, Xor: make([]byte, 4)},
			cmp,
		},
	}
}

func outputInterface(name string) term { return oifname(name, expr.CmpOpEq, "") }

func outputInterfaceNot(name string) term { return oifname(name, expr.CmpOpNeq, "!= ") }

func oifname(name string, op expr.CmpOp, opText string) term {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return term{
		text: fmt.Sprintf("oifname %s%q", opText, name),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg},
			&expr.Cmp{Op: op, Register: reg, Data: b},
		},
	}
}

// daddrIn matches the destination address against an address set of one family.
// In an inet table the family check comes first, as nft adds it.
func daddrIn(s set) term { return daddrLookup(s, false) }

// daddrNotIn matches packets of s's family whose destination is not in s; a packet of the other family never
// matches.
func daddrNotIn(s set) term { return daddrLookup(s, true) }

func daddrLookup(s set, invert bool) term {
	proto, word, offset, size := byte(unix.NFPROTO_IPV4), "ip", uint32(16), uint32(4)
	if s.keyType.Bytes == 16 {
		proto, word, offset, size = unix.NFPROTO_IPV6, "ip6", 24, 16
	}
	l, op := lookup(s), ""
	if invert {
		l.Invert, op = true, "!= "
	}
	return term{
		text: fmt.Sprintf("%s daddr %s@%s", word, op, s.name),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
			l,
		},
	}
}

// daddrLocal matches packets to a local address of the host, as the routing table
// has it now: every interface, every family, addresses added later.
func daddrLocal() term {
	return term{
		text: "fib daddr type local",
		exprs: []expr.Any{
			&expr.Fib{Register: reg, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
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

func drop() term {
	return term{text: "drop", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}}
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

// ctStatusDstNAT is IPS_DST_NAT, the conntrack status bit of a connection whose
// destination was rewritten (by our redirects among others); x/sys/unix lacks it.
const ctStatusDstNAT = 1 << 5

// ctStateNew matches packets of connections not yet answered: for TCP, the SYN.
func ctStateNew() term {
	return ctBitSet(expr.CtKeySTATE, expr.CtStateBitNEW, "ct state new")
}

// ctStatusDNAT matches packets of connections whose destination was rewritten.
func ctStatusDNAT() term {
	return ctBitSet(expr.CtKeySTATUS, ctStatusDstNAT, "ct status dnat")
}

func ctBitSet(key expr.CtKey, bit uint32, text string) term {
	return term{
		text: text,
		exprs: []expr.Any{
			&expr.Ct{Key: key, Register: reg},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, bit), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: make([]byte, 4)},
		},
	}
}

// rejectWithReset answers a TCP packet with a reset: the client sees "connection
// refused" at once. It must follow a TCP match.
func rejectWithReset() term {
	return term{
		text:  "reject with tcp reset",
		exprs: []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}},
	}
}

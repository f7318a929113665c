package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// returnPathChain marks the replies to the agent's transparent connections. The agent connects to a local
// application from the client's address (so the application sees the real client); the application's replies are
// addressed to the client, and routing would send them out of the host. Hooked at output with type route, a change
// of mark here makes the kernel route the packet again, now by capture.ReturnPath's rule: to the agent.
const returnPathChain = "return_path"

// returnPathGuardChain drops what carries the return path's mark on its way out of the host: should the policy
// rule or its route be gone (deleted by hand, by a network manager that removes rules it did not make), an
// application's replies to a client are lost, never sent to the client in plaintext, until the agent puts them
// back.
const returnPathGuardChain = "return_path_guard"

// addReturnPath adds the chains. The agent's transparent sockets carry mark, all of its bits (the agent's own mark
// and the return path's bit): it is added to their connection's mark, and from there to every packet of the
// connection, the application's replies among them. Bits are only ever added, never cleared, so other software's
// marks and the agent's own outbound bypass keep working; a packet of other software matches only if it carries
// every one of the bits.
func (rs *Ruleset) addReturnPath(mark uint32) {
	rs.chains = append(rs.chains, chain{
		name:     returnPathChain,
		kind:     nftables.ChainTypeRoute,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: *nftables.ChainPriorityMangle,
		rules: []rule{
			{terms: []term{markHasBits(mark), ctMarkAdd(mark)}, comment: "the agent's connection from a client's address"},
			{terms: []term{ctMarkHasBits(mark), metaMarkAdd(mark)}, comment: "its packets, the application's replies among them, go back to the agent"},
		},
	}, chain{
		name:     returnPathGuardChain,
		kind:     nftables.ChainTypeFilter,
		hook:     nftables.ChainHookPostrouting, // at output, oifname is still the route before return_path's
		hookName: "postrouting",
		priority: *nftables.ChainPriorityFilter,
		rules: []rule{
			{terms: []term{markHasBits(mark), outputInterfaceNot("lo"), drop()}, comment: "never out of the host: the return path's packets are the agent's"},
		},
	})
}

// ctMarkHasBits matches packets of connections whose mark has all the bits of mark set.
func ctMarkHasBits(mark uint32) term {
	return markTest("ct mark", &expr.Ct{Key: expr.CtKeyMARK, Register: reg}, mark, expr.CmpOpEq)
}

// ctMarkAdd sets the bits of mark in the connection's mark.
func ctMarkAdd(mark uint32) term {
	return term{text: fmt.Sprintf("ct mark set ct mark | 0x%08x", mark), exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg},
		orBits(mark),
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg, SourceRegister: true},
	}}
}

// metaMarkAdd sets the bits of mark in the packet's mark.
func metaMarkAdd(mark uint32) term {
	return term{text: fmt.Sprintf("meta mark set meta mark | 0x%08x", mark), exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg},
		orBits(mark),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg, SourceRegister: true},
	}}
}

// orBits is reg |= bits, the way nft encodes it: (reg & ^bits) ^ bits.
func orBits(bits uint32) *expr.Bitwise {
	return &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
		Mask: binary.NativeEndian.AppendUint32(nil, ^bits), Xor: binary.NativeEndian.AppendUint32(nil, bits)}
}

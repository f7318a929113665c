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

// addReturnPath adds the chain: the agent's transparent socket's mark is kept on its connection, and put on every
// packet of that connection, the application's replies among them. Nothing else is marked.
func (rs *Ruleset) addReturnPath(mark uint32) {
	rs.chains = append(rs.chains, chain{
		name:     returnPathChain,
		kind:     nftables.ChainTypeRoute,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: *nftables.ChainPriorityMangle,
		rules: []rule{
			{terms: []term{markHasBits(mark), ctMarkSet(mark)}, comment: "the agent's connection from a client's address"},
			{terms: []term{ctMarkHasBits(mark), metaMarkSet(mark)}, comment: "its packets, the application's replies among them, go back to the agent"},
		},
	})
}

// ctMarkHasBits matches packets of connections whose mark has all the bits of mark set.
func ctMarkHasBits(mark uint32) term {
	return markTest("ct mark", &expr.Ct{Key: expr.CtKeyMARK, Register: reg}, mark, expr.CmpOpEq)
}

func ctMarkSet(mark uint32) term {
	return term{text: fmt.Sprintf("ct mark set 0x%08x", mark), exprs: []expr.Any{
		&expr.Immediate{Register: reg, Data: binary.NativeEndian.AppendUint32(nil, mark)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg, SourceRegister: true},
	}}
}

func metaMarkSet(mark uint32) term {
	return term{text: fmt.Sprintf("meta mark set 0x%08x", mark), exprs: []expr.Any{
		&expr.Immediate{Register: reg, Data: binary.NativeEndian.AppendUint32(nil, mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg, SourceRegister: true},
	}}
}

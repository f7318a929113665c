package nft

// The zone table, inet ambient_agent_zone: the agent's transparent connections (the ones it makes to a local
// application from a client's address, Spec.ReturnMark) get a conntrack zone of their own for their original
// direction.
//
// Why: the kernel picks such a connection's source port among the host's own sockets, not among the connections
// conntrack tracks, and a client's redirected connection to the same application is tracked with the client's
// address and port as its source too. Should the two ports be the same, the two connections would be one
// conntrack entry: the later one replaces the earlier, which breaks, and the application's replies on it lose the
// return path's mark. In the zone, the agent's connection is looked up apart from everything arriving from the
// network; its reply direction stays in the host's zone, where the application's replies (unmarked before
// conntrack has seen them) find it.
//
// A zone for one direction needs NFTA_CT_DIRECTION on the ct expression, which google/nftables sends for address
// and port keys only, so that expression is framed here. The table is owned by the agent's netlink socket, as the
// DNS table is: the agent's transparent connections end with its process, and so does the table.

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	agentports "github.com/ambient-agent/ambient-agent/ports"
)

// ZoneTableName is the zone table's name.
const ZoneTableName = "ambient_agent_zone"

// ctDirOriginal is IP_CT_DIR_ORIGINAL, missing from x/sys/unix.
const ctDirOriginal = 0

// ZoneRuleset is the zone table rendered: one chain on hook output, before conntrack.
type ZoneRuleset struct {
	chain chain
	mark  uint32
}

// RenderZone builds the zone table for the transparent sockets' mark (all of whose bits a packet must carry).
func RenderZone(mark uint32) (*ZoneRuleset, error) {
	if mark == 0 {
		return nil, fmt.Errorf("nft: invalid zone spec: mark 0")
	}
	zone := term{text: fmt.Sprintf("ct original zone set %d", agentports.ConntrackZone)}
	return &ZoneRuleset{mark: mark, chain: chain{
		name:     "transparent",
		kind:     nftables.ChainTypeFilter,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: *nftables.ChainPriorityRaw,
		rules:    []rule{{terms: []term{markHasBits(mark), zone}, comment: "the agent's connections from a client's address"}},
	}}, nil
}

// String prints the table as `nft list table inet ambient_agent_zone` does, without the "# progname" comment nft
// adds after the brace of an owned table.
func (rs *ZoneRuleset) String() string { return ownedText(ZoneTableName, rs.chain) }

// InstallZone opens a netlink socket in the network namespace netns (0: the caller's own) and creates the zone
// table with it, owned by it.
func InstallZone(rs *ZoneRuleset, netns int) (*OwnedTable, error) {
	b, err := rs.installBatch()
	if err != nil {
		return nil, fmt.Errorf("nft: install table %s %s: %w", TableFamily, ZoneTableName, err)
	}
	return installOwned(ZoneTableName, b, netns)
}

func (rs *ZoneRuleset) installBatch() (batch, error) {
	return ownedBatch(ZoneTableName, rs.chain, func(r rule) (attrs, error) {
		list, err := exprList(append(markHasBits(rs.mark).exprs,
			&expr.Immediate{Register: reg, Data: binary.NativeEndian.AppendUint16(nil, agentports.ConntrackZone)}))
		if err != nil {
			return nil, err
		}
		ct := attrs{}.
			be32(unix.NFTA_CT_KEY, unix.NFT_CT_ZONE).
			be32(unix.NFTA_CT_SREG, reg).
			add(unix.NFTA_CT_DIRECTION, []byte{ctDirOriginal})
		list = list.nest(unix.NFTA_LIST_ELEM, attrs{}.str(unix.NFTA_EXPR_NAME, "ct").nest(unix.NFTA_EXPR_DATA, ct))
		return ruleAttrsOf(ZoneTableName, rs.chain.name, r.comment, list), nil
	})
}

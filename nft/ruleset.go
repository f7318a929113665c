package nft

import (
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Ruleset is the whole content of our table, rendered from a Spec. It is
// immutable: Render builds a new one, Apply sends it.
type Ruleset struct {
	sets   []set
	chains []chain
}

// chain is a base chain of our table.
type chain struct {
	name     string
	kind     nftables.ChainType // nat for the redirects, filter for the guard
	hook     *nftables.ChainHook
	hookName string
	priority nftables.ChainPriority
	rules    []rule
}

// rule is a sequence of terms, with a comment saying why it exists; nft shows the
// comment to whoever lists the host's ruleset.
type rule struct {
	terms   []term
	comment string
}

func (r rule) exprs() []expr.Any {
	var out []expr.Any
	for _, t := range r.terms {
		out = append(out, t.exprs...)
	}
	return out
}

// Render builds the ruleset for s. It fails only on an invalid Spec, naming every
// invalid field.
func Render(s Spec) (*Ruleset, error) {
	n, err := normalize(s)
	if err != nil {
		return nil, err
	}
	rs := &Ruleset{}
	if n.inbound {
		rs.addInbound(n)
	}
	if n.outbound {
		rs.addOutbound(n)
	}
	if len(n.guardedPorts) > 0 {
		rs.addGuard(n)
	}
	if n.returnMark != 0 {
		rs.addReturnPath(n.mark | n.returnMark)
	}
	return rs, nil
}

// addSet adds s to the table and returns it with its id, for rules to refer to.
// set is the set named name, added before.
func (rs *Ruleset) set(name string) set {
	i := slices.IndexFunc(rs.sets, func(s set) bool { return s.name == name })
	return rs.sets[i]
}

func (rs *Ruleset) addSet(s set) set {
	s.id = uint32(len(rs.sets) + 1)
	rs.sets = append(rs.sets, s)
	return s
}

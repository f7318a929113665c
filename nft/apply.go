package nft

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/userdata"
)

// ruleComment is libnftnl's NFTNL_UDATA_RULE_COMMENT, where nft finds a rule's
// comment.
const ruleComment userdata.Type = 0

// Apply replaces our table with rs in one netlink batch: if the table exists it is
// deleted, then it is added with all its sets, chains and rules. The kernel applies
// the batch atomically, so packets meet either the old table or the new one, never
// a half-built one; applying the same ruleset twice gives the same table.
//
// netns is a file descriptor of the network namespace to act on; 0 means the
// caller's own.
func Apply(rs *Ruleset, netns int) error {
	conn, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return fmt.Errorf("nft: apply table %s %s: %w", TableFamily, TableName, err)
	}
	t := ourTable()
	deleteTable(conn, t)
	conn.AddTable(t)
	for _, s := range rs.sets {
		if err := addSet(conn, t, s); err != nil {
			return fmt.Errorf("nft: apply table %s %s: set %s: %w", TableFamily, TableName, s.name, err)
		}
	}
	for _, c := range rs.chains {
		addChain(conn, t, c)
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nft: apply table %s %s: %w", TableFamily, TableName, err)
	}
	return nil
}

// Delete removes our table if it exists, in one batch. Deleting a table that does
// not exist is not an error.
func Delete(netns int) error {
	conn, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return fmt.Errorf("nft: delete table %s %s: %w", TableFamily, TableName, err)
	}
	deleteTable(conn, ourTable())
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nft: delete table %s %s: %w", TableFamily, TableName, err)
	}
	return nil
}

func ourTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// deleteTable queues "delete the table if it exists": adding a table that exists
// is a no-op, so the add makes the delete that follows always valid. Both go in
// the caller's batch, so no other process can see the table appear.
func deleteTable(conn *nftables.Conn, t *nftables.Table) {
	conn.AddTable(t)
	conn.DelTable(t)
}

func addSet(conn *nftables.Conn, t *nftables.Table, s set) error {
	ns := &nftables.Set{
		Table:        t,
		ID:           s.id,
		Name:         s.name,
		KeyType:      s.keyType,
		Interval:     s.interval,
		KeyByteOrder: binaryutil.NativeEndian,
	}
	if !s.hostOrder() {
		ns.KeyByteOrder = binaryutil.BigEndian
	}
	return conn.AddSet(ns, s.netlinkElements())
}

// netlinkElements lists the elements as the kernel takes them. An interval set
// holds range boundaries: each range's start, and its end (exclusive) flagged as
// such; like nft, it opens with an end at the zero address when the first range
// starts later, so that lookups below it miss on every kernel.
func (s set) netlinkElements() []nftables.SetElement {
	if !s.interval {
		out := make([]nftables.SetElement, len(s.elems))
		for i, e := range s.elems {
			out[i] = nftables.SetElement{Key: e.key}
		}
		return out
	}
	var out []nftables.SetElement
	if len(s.elems) > 0 && !allZero(s.elems[0].key) {
		out = append(out, nftables.SetElement{Key: make([]byte, len(s.elems[0].key)), IntervalEnd: true})
	}
	for _, e := range s.elems {
		out = append(out, nftables.SetElement{Key: e.key})
		if e.end != nil {
			out = append(out, nftables.SetElement{Key: e.end, IntervalEnd: true})
		}
	}
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func addChain(conn *nftables.Conn, t *nftables.Table, c chain) {
	policy := nftables.ChainPolicyAccept
	nc := conn.AddChain(&nftables.Chain{
		Name:     c.name,
		Table:    t,
		Type:     c.kind,
		Hooknum:  c.hook,
		Priority: &c.priority,
		Policy:   &policy,
	})
	for _, r := range c.rules {
		conn.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    nc,
			Exprs:    r.exprs(),
			UserData: userdata.AppendString(nil, ruleComment, r.comment),
		})
	}
}

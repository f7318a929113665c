package nft

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/google/nftables"
)

// State is what the kernel holds of our table, for health checks.
type State struct {
	Present bool     // the table exists
	Chains  []string // its chains, sorted
	Zone    bool     // the zone table (ZoneTableName) exists
}

// Inspect reads our table's presence and chains from the kernel (netns 0: the
// caller's own namespace). Rules are not read back: google/nftables drops some
// expressions when it does.
func Inspect(netns int) (State, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return State{}, fmt.Errorf("nft: inspect: %w", err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return State{}, fmt.Errorf("nft: inspect: list tables: %w", err)
	}
	var st State
	for _, t := range tables {
		switch t.Name {
		case TableName:
			st.Present = true
		case ZoneTableName:
			st.Zone = true
		}
	}
	if !st.Present {
		return st, nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return st, fmt.Errorf("nft: inspect: list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == TableName {
			st.Chains = append(st.Chains, c.Name)
		}
	}
	slices.Sort(st.Chains)
	return st, nil
}

// ChainNames are the chains rs has, sorted: what Inspect should find.
func (rs *Ruleset) ChainNames() []string {
	var names []string
	for _, c := range rs.chains {
		names = append(names, c.name)
	}
	slices.Sort(names)
	return names
}

// DiffSets compares the sets of our table in the kernel (netns 0: the caller's own
// namespace) with rs's, by name and elements, and describes the first difference
// it finds, e.g. "set excluded_uids: elements differ"; "" means they are the same.
//
// It is how package capture tells whether a change to set elements touched our
// table: the kernel's notice of such a change names the table, but
// google/nftables v0.3.0 drops the name (and that of a set's table) when it
// parses the notice. Anonymous sets are skipped: they belong to rules, and a rule
// added or deleted has a notice of its own that names its table.
func (rs *Ruleset) DiffSets(netns int) (string, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(netns), nftables.AsLasting())
	if err != nil {
		return "", fmt.Errorf("nft: compare sets: %w", err)
	}
	defer func() { _ = conn.CloseLasting() }()
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("nft: compare sets: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return "table missing", nil
	}
	t := ourTable()
	kernelSets, err := conn.GetSets(t)
	if err != nil {
		return "", fmt.Errorf("nft: compare sets: list sets: %w", err)
	}
	inKernel := map[string]*nftables.Set{}
	for _, ks := range kernelSets {
		if !ks.Anonymous {
			ks.Table = t
			inKernel[ks.Name] = ks
		}
	}
	for _, s := range rs.sets {
		ks, ok := inKernel[s.name]
		if !ok {
			return fmt.Sprintf("set %s missing", s.name), nil
		}
		delete(inKernel, s.name)
		elems, err := conn.GetSetElements(ks)
		if err != nil {
			return "", fmt.Errorf("nft: compare sets: set %s: %w", s.name, err)
		}
		if !slices.Equal(elementKeys(elems), elementKeys(s.netlinkElements())) {
			return fmt.Sprintf("set %s: elements differ", s.name), nil
		}
	}
	if len(inKernel) > 0 {
		names := slices.Sorted(maps.Keys(inKernel))
		return fmt.Sprintf("set %s added", names[0]), nil
	}
	return "", nil
}

// elementKeys lists the elements as sortable text, for comparing two lists in
// whatever order the kernel dumps them.
func elementKeys(elems []nftables.SetElement) []string {
	out := make([]string, len(elems))
	for i, e := range elems {
		out[i] = hex.EncodeToString(e.Key)
		if e.IntervalEnd {
			out[i] += "/end"
		}
	}
	slices.Sort(out)
	return out
}

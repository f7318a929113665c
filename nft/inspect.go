package nft

import (
	"fmt"
	"slices"

	"github.com/google/nftables"
)

// State is what the kernel holds of our table, for health checks.
type State struct {
	Present bool     // the table exists
	Chains  []string // its chains, sorted
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
		if t.Name == TableName {
			st.Present = true
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

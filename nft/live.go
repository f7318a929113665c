package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// LiveTableName is the running agent's copy of our table. It holds the same
// sets and chains as inet ambient_agent, and it is owned by the agent's netlink
// socket (NFT_TABLE_F_OWNER, Linux 5.12 and later): no other process can change
// or delete it, `nft flush ruleset` leaves it alone, and the kernel deletes it
// when the socket closes, that is when the agent exits however it exits. So
// while an agent runs, a flush of the host's ruleset (`systemctl restart
// nftables`) never leaves captured traffic unredirected, even for the moment
// before the agent puts inet ambient_agent back; once the agent is gone, inet
// ambient_agent alone keeps the host closed.
//
// With both tables in place every packet meets the same rules twice: the first
// nat chain that redirects a connection decides it (the kernel consults no other
// nat chain of the hook once a connection has a mapping), and a "return" in one
// only hands the packet to the other, which returns too.
const LiveTableName = "ambient_agent_live"

// Live is the live copy of the table and the socket that owns it. Its methods
// are not safe for concurrent use: the caller serializes them.
type Live struct {
	conn      *nftables.Conn
	installed bool // whether the copy holds a ruleset (its sets and chains exist)
	last      *Ruleset
}

// OpenLive opens a lasting netlink socket in the network namespace netns (0: the
// caller's own) and creates the live table, empty, owned by it. It fails when the
// kernel has no owned tables (before 5.12) or a table of that name exists (made
// by hand: an agent's own disappears with it).
func OpenLive(netns int) (*Live, error) {
	var nl *netlink.Conn
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(netns),
		nftables.WithSockOptions(func(c *netlink.Conn) error { nl = c; return nil }))
	if err != nil {
		return nil, fmt.Errorf("nft: open table %s %s: %w", TableFamily, LiveTableName, err)
	}
	if err := createOwnedTable(nl, LiveTableName); err != nil {
		_ = conn.CloseLasting()
		switch {
		case errors.Is(err, unix.EEXIST):
			err = fmt.Errorf("%w: a table of that name exists without an owner (made by hand? nft delete table %s %s)", err, TableFamily, LiveTableName)
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
			err = fmt.Errorf("%w: the kernel has no owned tables (Linux 5.12 and later)", err)
		}
		return nil, fmt.Errorf("nft: create table %s %s: %w", TableFamily, LiveTableName, err)
	}
	return &Live{conn: conn}, nil
}

// createOwnedTable sends one batch that creates table name, owned by c's socket.
// google/nftables always sends a table's flags as 0, so this message is ours.
func createOwnedTable(c *netlink.Conn, name string) error {
	nfgen := func(family byte, resID uint16) []byte {
		return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
	}
	table := attrs{}.str(unix.NFTA_TABLE_NAME, name).be32(unix.NFTA_TABLE_FLAGS, tableFlagOwner)
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data: append(nfgen(unix.NFPROTO_INET, 0), table...)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return err
	}
	_, err := c.Receive() // the table's acknowledgement, or its error
	var oe *netlink.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func liveTable() *nftables.Table {
	return &nftables.Table{Name: LiveTableName, Family: nftables.TableFamilyINet}
}

// Apply makes the live table hold rs, in one batch: the previous sets and chains
// go, rs's come. The table itself stays (re-adding it would drop its owner flag,
// which the kernel refuses).
func (l *Live) Apply(rs *Ruleset) error {
	t := liveTable()
	if l.installed {
		for _, c := range l.last.chains {
			l.conn.DelChain(&nftables.Chain{Name: c.name, Table: t})
		}
		for _, s := range l.last.sets {
			l.conn.DelSet(&nftables.Set{Name: s.name, Table: t})
		}
	}
	for _, s := range rs.sets {
		if err := addSet(l.conn, t, s); err != nil {
			return fmt.Errorf("nft: apply table %s %s: set %s: %w", TableFamily, LiveTableName, s.name, err)
		}
	}
	for _, c := range rs.chains {
		addChain(l.conn, t, c)
	}
	if err := l.conn.Flush(); err != nil {
		return fmt.Errorf("nft: apply table %s %s: %w", TableFamily, LiveTableName, err)
	}
	l.installed, l.last = true, rs
	return nil
}

// Close closes the owning socket: the kernel deletes the live table.
func (l *Live) Close() error {
	if err := l.conn.CloseLasting(); err != nil {
		return fmt.Errorf("nft: close table %s %s: %w", TableFamily, LiveTableName, err)
	}
	return nil
}

package nft

// DNS capture: a second table, inet ambient_agent_dns, that redirects the host's
// DNS queries to the agent's DNS proxy and, unlike the main table, fails open.
//
// The main table survives the agent on purpose (TCP capture fails closed). A DNS
// redirect that outlived the agent would break every name lookup on the host, so
// this table is created with the kernel's owner flag (NFT_TABLE_F_OWNER, Linux
// 5.12): it belongs to the netlink socket that created it, only that socket may
// change it, and the kernel deletes it when the socket closes, which happens when
// the process exits, however it exits (kill -9 included). google/nftables v0.3.0
// always sends table flags 0, so the batch is framed here; the rule expressions
// are still marshalled by its expr package.
//
// The DNS proxy's port needs no guard like the main table's (guard.go): this
// redirect lives no longer than the agent's process, which binds the port (UDP
// and TCP, on ::1 too when IPv6 is captured) before it installs the table and
// deletes the table before it closes the port; a process that dies loses both
// at once, as the kernel closes its sockets. No one else can hold the port while
// queries are redirected to it.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	agentports "github.com/ambient-agent/ambient-agent/ports"
)

// The DNS table and its defaults.
const (
	DNSTableName   = "ambient_agent_dns"
	DefaultDNSPort = agentports.DNS
)

// tableFlagOwner is NFT_TABLE_F_OWNER, missing from x/sys/unix.
const tableFlagOwner = 0x2

// dnsPriority runs the DNS chain just before the main table's outbound chain
// (dstnat, -100). Of all nat chains on a hook, the first one that sets up a
// mapping wins and the later ones do not see the connection: DNS over TCP goes to
// the DNS proxy, not to the outbound proxy.
var dnsPriority = *nftables.ChainPriorityNATDest - 1

// DNSSpec is what the DNS table captures: locally originated UDP and TCP to port
// 53, except the proxy's own upstream queries.
type DNSSpec struct {
	// Mark is the SO_MARK of the proxy's upstream sockets; queries whose mark has
	// all of these bits set are not captured. 0 means DefaultMark.
	Mark uint32
	// Port is the proxy's port. REDIRECT sends IPv4 queries to 127.0.0.1:Port and
	// IPv6 ones to [::1]:Port. 0 means DefaultDNSPort; 53 is refused, so that the
	// proxy's own port is never captured.
	Port uint16
	// IPv6 captures IPv6 queries too. Set it only when the proxy also listens on
	// [::1]:Port; otherwise IPv6 queries go to their destination unchanged.
	IPv6 bool
}

// DNSRuleset is the rendered DNS table: one nat chain on hook output.
type DNSRuleset struct {
	chain chain
}

// RenderDNS builds the DNS table for s; it fails only on an invalid spec.
func RenderDNS(s DNSSpec) (*DNSRuleset, error) {
	mark := cmp.Or(s.Mark, DefaultMark)
	port := cmp.Or(s.Port, DefaultDNSPort)
	if port == 53 {
		return nil, errors.New("nft: invalid DNS spec: Port 53 would capture the proxy's own port")
	}
	rules := []rule{{terms: []term{markHasBits(mark), bypass()}, comment: "the DNS proxy's own queries"}}
	if !s.IPv6 {
		rules = append(rules, rule{terms: []term{nfproto(unix.NFPROTO_IPV6, "ipv6"), bypass()}, comment: "the proxy does not listen on ::1"})
	}
	for _, p := range []struct {
		num  byte
		name string
	}{{unix.IPPROTO_UDP, "udp"}, {unix.IPPROTO_TCP, "tcp"}} {
		rules = append(rules, rule{terms: []term{dportIs(p.num, p.name, 53), redirectTo(port)}, comment: "to the DNS proxy"})
	}
	return &DNSRuleset{chain: chain{
		name:     "output",
		kind:     nftables.ChainTypeNAT,
		hook:     nftables.ChainHookOutput,
		hookName: "output",
		priority: dnsPriority,
		rules:    rules,
	}}, nil
}

// String prints the table as `nft list table inet ambient_agent_dns` does, without
// the "# progname" comment nft adds after the brace of an owned table.
func (rs *DNSRuleset) String() string { return ownedText(DNSTableName, rs.chain) }

// ownedText prints an owned table of one chain.
func ownedText(name string, c chain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n\tflags owner\n\n", TableFamily, name)
	c.writeText(&b)
	b.WriteString("}\n")
	return b.String()
}

func nfproto(proto byte, name string) term {
	return term{
		text: "meta nfproto " + name,
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
		},
	}
}

func dportIs(proto byte, name string, port uint16) term {
	return term{
		text: fmt.Sprintf("%s dport %d", name, port),
		exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binary.BigEndian.AppendUint16(nil, port)},
		},
	}
}

// OwnedTable is a table in the kernel together with the netlink socket that owns
// it (the DNS table, the zone table): the table lives until Close or until the
// process exits.
type OwnedTable struct {
	mu   sync.Mutex
	name string
	fd   int // the owning netlink socket; -1 once closed
}

// InstallDNS opens a netlink socket in the network namespace netns (0: the
// caller's own) and creates the DNS table with it, owned by it. It fails if the
// table exists: owned by another live process (another agent), or created by hand.
func InstallDNS(rs *DNSRuleset, netns int) (*OwnedTable, error) {
	b, err := rs.installBatch()
	if err != nil {
		return nil, fmt.Errorf("nft: install table %s %s: %w", TableFamily, DNSTableName, err)
	}
	return installOwned(DNSTableName, b, netns)
}

func (rs *DNSRuleset) installBatch() (batch, error) {
	return ownedBatch(DNSTableName, rs.chain, func(r rule) (attrs, error) { return ruleAttrs(DNSTableName, rs.chain.name, r) })
}

// ownedBatch creates table name, owned, with c and its rules, whose attributes ruleOf gives. NLM_F_EXCL: an
// existing table of that name is never taken over.
func ownedBatch(name string, c chain, ruleOf func(rule) (attrs, error)) (batch, error) {
	b := batch{}
	b.add("table", unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, tableAttrs(name).be32(unix.NFTA_TABLE_FLAGS, tableFlagOwner))
	b.add("chain", unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, chainAttrs(name, c))
	for i, r := range c.rules {
		a, err := ruleOf(r)
		if err != nil {
			return batch{}, fmt.Errorf("rule %d: %w", i+1, err)
		}
		b.add(fmt.Sprintf("rule %d", i+1), unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, a)
	}
	return b, nil
}

// installOwned sends b, which creates table name, on a new netlink socket in netns (0: the caller's own), which
// then owns the table.
func installOwned(name string, b batch, netns int) (*OwnedTable, error) {
	fd, err := netlinkSocket(netns)
	if err != nil {
		return nil, fmt.Errorf("nft: install table %s %s: %w", TableFamily, name, err)
	}
	if err := b.send(fd); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("nft: install table %s %s: %w", TableFamily, name, explain(err, name))
	}
	return &OwnedTable{name: name, fd: fd}, nil
}

// Close deletes the table and closes the socket that owns it. It is idempotent.
// Closing the socket alone would delete the table too; deleting it first reports
// whether the kernel did.
func (t *OwnedTable) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil
	}
	b := batch{}
	b.add("table", unix.NFT_MSG_DELTABLE, 0, tableAttrs(t.name))
	err := b.send(t.fd)
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	err = errors.Join(err, unix.Close(t.fd))
	t.fd = -1
	if err != nil {
		return fmt.Errorf("nft: delete table %s %s: %w", TableFamily, t.name, err)
	}
	return nil
}

// Release closes this process's socket and leaves the table to the other holders of that socket (the agent a
// handoff passed it to); with none, the kernel deletes the table. It is idempotent.
func (t *OwnedTable) Release() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	return err
}

// Dup is a new close-on-exec descriptor of the socket that owns the table, for another process: while either
// holds it, the table lives.
func (t *OwnedTable) Dup() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fd < 0 {
		return -1, fmt.Errorf("nft: table %s %s: closed", TableFamily, t.name)
	}
	return unix.FcntlInt(uintptr(t.fd), unix.F_DUPFD_CLOEXEC, 0)
}

// AdoptOwned is table name through fd, a descriptor of the socket that owns it, received from the process that
// created it (a handoff). The caller's fd is the OwnedTable's from now on.
func AdoptOwned(name string, fd int) *OwnedTable { return &OwnedTable{name: name, fd: fd} }

// explain adds what an operator can do about the usual refusals of table name.
func explain(err error, name string) error {
	var be *batchError
	if !errors.As(err, &be) {
		return err
	}
	switch {
	case be.what == "batch" && be.errno == unix.EPERM:
		return fmt.Errorf("%w (needs CAP_NET_ADMIN)", err)
	case be.what == "table" && be.errno == unix.EPERM:
		return fmt.Errorf("%w: another running process owns the table (is another agent running?)", err)
	case be.what == "table" && be.errno == unix.EEXIST:
		return fmt.Errorf("%w: the table exists without an owner (made by hand? nft delete table %s %s)", err, TableFamily, name)
	}
	return err
}

// netlinkSocket opens a NETLINK_NETFILTER socket in the namespace netns. A locked
// thread enters the namespace and is never unlocked, so the runtime ends it with
// its goroutine: the namespace change reaches no other goroutine. The socket stays
// in the namespace it was created in. SOCK_CLOEXEC matters here: a child process
// that inherited the socket would keep the table alive after the agent's death.
func netlinkSocket(netns int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		if netns != 0 {
			runtime.LockOSThread()
			if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
				done <- result{-1, fmt.Errorf("enter network namespace: %w", err)}
				return
			}
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			done <- result{-1, fmt.Errorf("netlink socket: %w", err)}
			return
		}
		done <- result{fd, nil}
	}()
	r := <-done
	if r.err != nil {
		return -1, r.err
	}
	// The kernel answers a batch at once; the timeout only guards against waiting
	// forever for an answer that is not coming.
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	err := unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err == nil {
		err = unix.Bind(r.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	if err != nil {
		_ = unix.Close(r.fd)
		return -1, fmt.Errorf("netlink socket: %w", err)
	}
	return r.fd, nil
}

// batch is an nfnetlink batch of nf_tables messages, which the kernel applies
// all or nothing. Every message asks for an answer, so that a failure names the
// message it is about.
type batch struct {
	msgs []batchMsg
}

type batchMsg struct {
	what  string // for errors: "table", "chain", "rule 2"
	typ   uint16 // NFT_MSG_*
	flags uint16 // NLM_F_* besides REQUEST and ACK
	attrs attrs
}

func (b *batch) add(what string, typ, flags int, a attrs) {
	b.msgs = append(b.msgs, batchMsg{what: what, typ: uint16(typ), flags: uint16(flags), attrs: a})
}

// seqs numbers the messages of all batches: answers to an earlier batch are
// never taken for answers to the current one.
var seqs atomic.Uint32

// send sends the batch on fd and waits for the kernel's answer to each message.
// The kernel answers every message of a batch, and a message that fails makes the
// later ones fail too; the first failure is the one returned.
func (b *batch) send(fd int) error {
	begin := seqs.Add(uint32(len(b.msgs)+2)) - uint32(len(b.msgs)+1)
	if err := unix.Sendto(fd, b.encode(begin), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	pending := make(map[uint32]int, len(b.msgs))
	for i := range b.msgs {
		pending[begin+1+uint32(i)] = i
	}
	var first *batchError
	rb := make([]byte, 1<<16)
	for len(pending) > 0 {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for the kernel's answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return fmt.Errorf("kernel's answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4+unix.SizeofNlMsghdr {
				continue
			}
			errno := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
			seq := binary.NativeEndian.Uint32(m.Data[4+8:]) // the answered message's nlmsg_seq
			// An answer to the batch itself: it was refused whole (no
			// permission, no memory, the commit failed).
			if seq == begin {
				return &batchError{what: "batch", errno: errno}
			}
			i, ok := pending[seq]
			if !ok {
				continue
			}
			delete(pending, seq)
			if errno != 0 && (first == nil || i < first.index) {
				first = &batchError{what: b.msgs[i].what, index: i, errno: errno}
			}
		}
	}
	if first != nil {
		return first
	}
	return nil
}

// batchError is the kernel's refusal of a batch, naming the message refused.
type batchError struct {
	what  string // "batch" when refused whole
	index int
	errno unix.Errno
}

func (e *batchError) Error() string { return e.what + ": " + e.errno.Error() }
func (e *batchError) Unwrap() error { return e.errno }

// encode frames the batch, numbering its messages from begin: BATCH_BEGIN, the
// messages, each asking for an answer, BATCH_END.
func (b *batch) encode(begin uint32) []byte {
	buf := appendMsg(nil, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, begin, unix.AF_UNSPEC, nil)
	for i, m := range b.msgs {
		buf = appendMsg(buf, unix.NFNL_SUBSYS_NFTABLES<<8|m.typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|m.flags, begin+1+uint32(i), unix.NFPROTO_INET, m.attrs)
	}
	return appendMsg(buf, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, begin+1+uint32(len(b.msgs)), unix.AF_UNSPEC, nil)
}

// appendMsg appends a netlink message: nlmsghdr, nfgenmsg, attributes. Batch
// delimiters carry the subsystem in nfgenmsg's res_id.
func appendMsg(buf []byte, typ, flags uint16, seq uint32, family byte, a attrs) []byte {
	var resID uint16
	if typ == unix.NFNL_MSG_BATCH_BEGIN || typ == unix.NFNL_MSG_BATCH_END {
		resID = unix.NFNL_SUBSYS_NFTABLES
	}
	buf = binary.NativeEndian.AppendUint32(buf, uint32(unix.SizeofNlMsghdr+4+len(a)))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = binary.NativeEndian.AppendUint16(buf, flags)
	buf = binary.NativeEndian.AppendUint32(buf, seq)
	buf = binary.NativeEndian.AppendUint32(buf, 0) // pid: the kernel
	buf = append(buf, family, unix.NFNETLINK_V0)
	buf = binary.BigEndian.AppendUint16(buf, resID)
	return append(buf, a...)
}

// attrs are netlink attributes: headers in host order, nf_tables values in
// network order, each padded to 4 bytes.
type attrs []byte

func (a attrs) add(typ uint16, data []byte) attrs {
	a = binary.NativeEndian.AppendUint16(a, uint16(4+len(data)))
	a = binary.NativeEndian.AppendUint16(a, typ)
	a = append(a, data...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

func (a attrs) str(typ uint16, s string) attrs { return a.add(typ, append([]byte(s), 0)) }

func (a attrs) be32(typ uint16, v uint32) attrs {
	return a.add(typ, binary.BigEndian.AppendUint32(nil, v))
}

func (a attrs) nest(typ uint16, inner attrs) attrs { return a.add(typ|unix.NLA_F_NESTED, inner) }

func tableAttrs(name string) attrs { return attrs{}.str(unix.NFTA_TABLE_NAME, name) }

func chainAttrs(table string, c chain) attrs {
	hook := attrs{}.
		be32(unix.NFTA_HOOK_HOOKNUM, uint32(*c.hook)).
		be32(unix.NFTA_HOOK_PRIORITY, uint32(c.priority))
	return attrs{}.
		str(unix.NFTA_CHAIN_TABLE, table).
		str(unix.NFTA_CHAIN_NAME, c.name).
		nest(unix.NFTA_CHAIN_HOOK, hook).
		be32(unix.NFTA_CHAIN_POLICY, uint32(nftables.ChainPolicyAccept)).
		str(unix.NFTA_CHAIN_TYPE, string(c.kind))
}

func ruleAttrs(table, chainName string, r rule) (attrs, error) {
	list, err := exprList(r.exprs())
	if err != nil {
		return nil, err
	}
	return ruleAttrsOf(table, chainName, r.comment, list), nil
}

// exprList is the expressions' attribute list, as NFTA_RULE_EXPRESSIONS holds it.
func exprList(exprs []expr.Any) (attrs, error) {
	var list attrs
	for _, e := range exprs {
		b, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			return nil, err
		}
		list = list.nest(unix.NFTA_LIST_ELEM, b)
	}
	return list, nil
}

func ruleAttrsOf(table, chainName, comment string, list attrs) attrs {
	return attrs{}.
		str(unix.NFTA_RULE_TABLE, table).
		str(unix.NFTA_RULE_CHAIN, chainName).
		nest(unix.NFTA_RULE_EXPRESSIONS, list).
		add(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, ruleComment, comment))
}

package nft

import "github.com/google/nftables"

// guardChain checks who receives the connections that the other chains
// redirected. Hooked at input, after routing and after the nat chains, it sees
// the first packet of a connection with its destination already rewritten, and
// the kernel can look up the socket that would receive it.
const guardChain = "guard"

const setGuardedPorts = "guarded_ports"

// addGuard adds the guard: a new connection that was redirected to one of the
// agent's ports is reset when the socket listening there lacks the agent's mark.
//
// Why: while the agent is down (crash, restart, upgrade) its table stays, so that
// captured connections fail closed, and its ports are free. An unprivileged local
// user who binds one of them would receive every other user's redirected
// connections, and inbound ones from the network, in plaintext. The same goes for
// an address the agent leaves free while it runs (it binds 127.0.0.1, the user
// binds ::1). Only a privileged process (CAP_NET_ADMIN or CAP_NET_RAW) can mark
// its socket. With no
// listener at all the rule does not match and the kernel resets the connection as
// it always did.
//
// Reset rather than drop: the client then fails at once, exactly as when nothing
// listens, instead of retrying its SYN for minutes; redirected connections fail
// closed the same way whoever squats the port.
//
// Only redirected connections are checked (ct status dnat): a local process that
// connects to the port directly reaches whatever listens there, as it would
// without our table.
func (rs *Ruleset) addGuard(n normalized) {
	ports := rs.addSet(portSet(setGuardedPorts, n.guardedPorts))
	rs.chains = append(rs.chains, chain{
		name:     guardChain,
		kind:     nftables.ChainTypeFilter,
		hook:     nftables.ChainHookInput,
		hookName: "input",
		priority: *nftables.ChainPriorityFilter,
		rules: []rule{{
			terms:   []term{tcpDportIn(ports), ctStateNew(), ctStatusDNAT(), socketMarkLacks(n.mark), rejectWithReset()},
			comment: "redirected to a socket that is not the agent's",
		}},
	})
}

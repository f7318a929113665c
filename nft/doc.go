// Package nft is the agent's nftables ruleset as Go code: it renders the one table
// the agent owns, inet ambient_agent, from a Spec, and applies it to the kernel.
//
// Rendering and applying are separate. Render is pure: it validates a Spec and
// returns a Ruleset whose String method prints it in the syntax of `nft list table`,
// so golden files check the rules without root. Apply sends a Ruleset to the kernel
// over netlink (github.com/google/nftables) as one atomic batch that deletes our
// table if it exists and adds it again whole; Delete removes it. Nothing here reads,
// flushes or changes any other table: hosts run firewalld, ufw and Docker.
//
// The rules (see outbound.go and inbound.go):
//
//   - outbound, hook output: locally originated TCP is redirected to the agent's
//     outbound port (15001) unless the socket carries the agent's mark, the packet
//     is delivered locally (leaves through lo: loopback and the host's own
//     addresses; with Spec.SameHost, a class's process reaching a local workload
//     address is captured all the same), or its destination CIDR, destination
//     port, or the process's uid or gid is excluded;
//   - inbound, hook prerouting: TCP arriving for a local workload address on a port
//     that is not excluded is redirected to the inbound plaintext port (15006). The
//     HBONE port (15008) must be in the excluded ports so that it reaches the agent.
//   - guard, hook input, with Spec.GuardListeners: a new connection redirected to
//     one of the ports above (and the workload classes' ports) is reset unless the
//     socket listening there carries the agent's mark (`socket mark`). While the
//     agent is down those ports are free, and a local user who bound one would
//     otherwise receive other users' connections; marking a socket needs
//     CAP_NET_ADMIN or CAP_NET_RAW (guard.go).
//
// Capture uses REDIRECT (nat), not TPROXY: the proxies find the original
// destination with SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST. REDIRECT needs nothing
// outside our table (TPROXY also needs policy routing: an ip rule and a local route
// that would be host state of their own to install and clean up), and it fails
// closed by itself: with the agent down and the table in place, a redirected
// connection meets a closed port and is reset, it never reaches its destination in
// plaintext (with the guard, not even when another process took the port). The
// cost: inbound, the application sees the agent's connection, which the agent
// makes from the client's address only with Spec.ReturnMark (the return_path
// chain) and capture.ReturnPath's rule. Inbound REDIRECT rewrites the destination to the primary
// address of the receiving interface, so the inbound listener must bind the
// wildcard address; outbound it rewrites to 127.0.0.1 or ::1.
//
// Live keeps a running agent's own copy of the table, inet ambient_agent_live,
// owned by its netlink socket: `nft flush ruleset` leaves it alone, and it goes
// with the process (live.go).
//
// DiffSets compares our sets in the kernel with a Ruleset's, for the watch in
// package capture that notices when another process changes the table.
//
// nft is a leaf: it must not import any package of the agent.
package nft

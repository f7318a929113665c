// Package handoff passes a running agent's listening sockets, and the nftables
// tables its sockets own, to the agent that replaces it, so that an upgrade or a
// restart never closes them: the new agent serves from the same sockets, then
// the old one stops accepting and drains what it holds.
//
// The two speak over a unix SOCK_SEQPACKET socket beside the control socket that
// only the agent's own user may use (the kernel's peer credentials are checked on
// both ends): whoever gets the sockets gets every connection the host makes.
// One JSON message per packet; the sockets travel as SCM_RIGHTS with the message
// that names them:
//
//	new -> old  hello   {pid, version}
//	old -> new  sockets {pid, version, names, state} + the descriptors, in names' order
//	new -> old  release-gossip          old -> new  gossip-released
//	new -> old  drain                   old -> new  draining
//
// From "sockets" on, the old agent leaves the shared state (the capture table,
// the gossip port once released) to the new one. If the connection closes
// before "drain" (the new agent failed or died), the old one takes everything
// back and goes on serving. After "draining" the connection stays open until
// the old agent exits: its end tells the new one the drain is over.
//
// It imports nothing of the agent's: a leaf.
package handoff

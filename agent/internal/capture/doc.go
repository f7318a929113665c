// Package capture puts the host's workload traffic into the agent: it installs,
// replaces and removes the agent's nftables table (rendered by package nft), finds
// the original destination of a redirected connection, and marks the agent's own
// sockets so that capture lets them through.
//
// Lifecycle, as the app drives it: Install once the outbound and inbound
// listeners accept (a rule installed earlier would redirect connections into
// nothing), Install again on reload, and at exit either leave the table (the
// host stays closed: the systemd unit's way) or Remove it (a deliberate stop);
// Cleanup is `ambient-agent cleanup`. While the table is in place and the agent
// is not running, captured connections are refused (the redirect target port is
// closed): traffic fails closed, never in plaintext.
//
// WithLiveCopy keeps, besides the table, the process's own copy of it, which
// other processes cannot flush and which goes with the process; Release drops it
// and leaves the table.
//
// Other processes may delete or change the table (`nft flush ruleset`, a
// firewall's restart): Watch, run from right after the first Install until stop,
// reports that within a second, and Repair installs the table again. When the
// table guards the agent's ports (nft.Spec.GuardListeners), the listeners that
// receive redirected connections must be opened with ListenMarked.
//
// Capture uses REDIRECT (see package nft): the proxies read the original
// destination with OriginalDst. The agent then connects to the application; to
// show it the real client ([capture] original_source) it does so with
// TransparentControl, a socket that may bind the client's address, and
// AgentReturnPath, the policy routing that brings the application's replies back
// to it (the table's return_path chains mark them, and drop them rather than let
// them out of the host; the kernel test shows the parts at work).
//
// capture imports nft, the standard library and vishvananda/netlink (for
// ReturnPath's rules and routes); it must not import config
// (the app maps config to nft.Spec), state, proxy or anything above them.
package capture

// Package app is the composition root: it builds every component of the agent in
// order, owns their lifetimes (one errgroup), readiness, reload, drain and the
// conversation with systemd (sd_notify, watchdog). It is the only package that
// imports nearly everything and the only one besides cmd that touches signals;
// nothing imports it but cmd.
package app

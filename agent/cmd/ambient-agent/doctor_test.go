package main

import (
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
)

// doctor compares what the agent installed with what the kernel holds.
func TestCheckTableReadsTheKernel(t *testing.T) {
	d := &dumpView{}
	d.Capture.Enabled, d.Capture.Table, d.Capture.Chains = true, "inet ambient_agent", []string{"guard", "inbound", "outbound"}
	if c := checkTable(d, nft.State{}); c.OK || !strings.Contains(c.Detail, "is missing") || c.Fix == "" {
		t.Errorf("table missing in the kernel: %+v", c)
	}
	if c := checkTable(d, nft.State{Present: true, Chains: []string{"inbound", "outbound"}}); c.OK || !strings.Contains(c.Detail, "lacks chains [guard]") {
		t.Errorf("a chain missing in the kernel: %+v", c)
	}
	if c := checkTable(d, nft.State{Present: true, Chains: []string{"guard", "inbound", "outbound"}}); !c.OK {
		t.Errorf("the whole table in the kernel: %+v", c)
	}
	d.Capture.Enabled = false
	if c := checkTable(d, nft.State{}); !c.OK {
		t.Errorf("nothing captured: %+v", c)
	}
}

package capture

import (
	"context"
	"strings"
	"testing"

	"github.com/ambient-agent/ambient-agent/nft"
)

// The live copy holds what the table holds, survives `nft flush ruleset` and a
// deletion attempt by another process, and goes when released, leaving the table.
func TestLiveCopySurvivesAFlush(t *testing.T) {
	requireKernel(t)
	ns := newNetNS(t)
	c := New(InNetNS(ns.fd), WithLiveCopy())
	for _, spec := range []nft.Spec{guardSpec(), labSpec()} { // the second replaces the first in both
		if err := c.Install(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		if err := c.LiveErr(); err != nil {
			t.Fatalf("no live copy: %v", err)
		}
		live := ns.mustNft(t, "", "list", "table", "inet", nft.LiveTableName)
		want := strings.Replace(c.Installed().String(), "table inet "+nft.TableName+" {", "table inet "+nft.LiveTableName+" {", 1)
		if got := oneLine(stripOwner(live)); got != oneLine(want) {
			t.Fatalf("the live copy differs from the table\n--- live\n%s\n--- table\n%s", live, want)
		}
	}
	ns.mustNft(t, "", "flush", "ruleset")
	if _, err := ns.nft("", "list", "table", "inet", nft.TableName); err == nil {
		t.Fatal("the table survived nft flush ruleset")
	}
	if _, err := ns.nft("", "list", "table", "inet", nft.LiveTableName); err != nil {
		t.Fatalf("the live copy did not survive nft flush ruleset: %v", err)
	}
	if out, err := ns.nft("", "delete", "table", "inet", nft.LiveTableName); err == nil {
		t.Fatalf("another process deleted the live copy: %s", out)
	}
	if err := c.Repair(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.nft("", "list", "table", "inet", nft.LiveTableName); err == nil {
		t.Fatal("the live copy outlived its release")
	}
	ns.mustNft(t, "", "list", "table", "inet", nft.TableName)
	// Installing again does not bring a released copy back, and Remove removes the table.
	if err := c.Install(context.Background(), labSpec()); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.nft("", "list", "table", "inet", nft.LiveTableName); err == nil {
		t.Fatal("a released live copy came back")
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
}

// stripOwner drops what nft prints of an owned table: the progname comment
// and the flags line.
func stripOwner(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "flags owner" {
			continue
		}
		if i := strings.Index(line, " # progname"); i >= 0 {
			line = line[:i]
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

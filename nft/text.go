package nft

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
)

// String prints the ruleset as `nft list table inet ambient_agent` (nftables 1.0)
// prints it once applied, except that set elements stay on one line. It is what
// the golden files hold and what operators compare with the host.
func (rs *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", TableFamily, TableName)
	first := true
	blank := func() {
		if !first {
			b.WriteString("\n")
		}
		first = false
	}
	for _, s := range rs.sets {
		blank()
		s.writeText(&b)
	}
	for _, c := range rs.chains {
		blank()
		c.writeText(&b)
	}
	b.WriteString("}\n")
	return b.String()
}

func (s set) writeText(b *strings.Builder) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.name, s.keyType.Name)
	if s.interval {
		b.WriteString("\t\tflags interval\n")
	}
	if len(s.elems) > 0 {
		texts := make([]string, len(s.elems))
		for i, e := range s.elems {
			texts[i] = e.text
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(texts, ", "))
	}
	b.WriteString("\t}\n")
}

func (c chain) writeText(b *strings.Builder) {
	fmt.Fprintf(b, "\tchain %s {\n", c.name)
	fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.kind, c.hookName, c.priorityText())
	for _, r := range c.rules {
		texts := make([]string, len(r.terms))
		for i, t := range r.terms {
			texts[i] = t.text
		}
		fmt.Fprintf(b, "\t\t%s", strings.Join(texts, " "))
		if r.comment != "" {
			fmt.Fprintf(b, " comment %q", r.comment)
		}
		b.WriteString("\n")
	}
	b.WriteString("\t}\n")
}

// priorityText names the priority as nft 1.0 does: "dstnat" only in prerouting,
// "filter" on every hook.
func (c chain) priorityText() string {
	switch {
	case c.priority == *nftables.ChainPriorityNATDest && c.hookName == "prerouting":
		return "dstnat"
	case c.priority == *nftables.ChainPriorityFilter:
		return "filter"
	case c.priority == *nftables.ChainPriorityMangle:
		return "mangle"
	case c.priority == *nftables.ChainPriorityRaw:
		return "raw"
	}
	return fmt.Sprint(int32(c.priority))
}

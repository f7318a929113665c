package config

import (
	"fmt"
	"net/netip"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"
)

// What happens to outbound TCP of processes of no recognised workload.
const (
	UnmatchedDefault     = "default"     // captured, with the default workload's identity
	UnmatchedPassthrough = "passthrough" // not captured
)

// ProcessMatch recognises a workload's processes by the owner of their
// sockets: a user, a group, or a systemd unit (its cgroup v2 directory).
type ProcessMatch struct {
	User  string  `json:"user,omitempty"` // as written in the file
	UID   *uint32 `json:"uid,omitempty"`
	Group string  `json:"group,omitempty"`
	GID   *uint32 `json:"gid,omitempty"`
	Unit  string  `json:"unit,omitempty"`
	// Cgroup is the unit's cgroup v2 directory below /sys/fs/cgroup, e.g.
	// "system.slice/reviews.service".
	Cgroup string `json:"cgroup,omitempty"`
}

// IsZero reports whether nothing recognises the workload's processes.
func (m ProcessMatch) IsZero() bool { return m.UID == nil && m.GID == nil && m.Cgroup == "" }

// String says how the processes are recognised, for people.
func (m ProcessMatch) String() string {
	var parts []string
	if m.UID != nil {
		parts = append(parts, fmt.Sprintf("user %s (uid %d)", m.User, *m.UID))
	}
	if m.GID != nil {
		parts = append(parts, fmt.Sprintf("group %s (gid %d)", m.Group, *m.GID))
	}
	if m.Cgroup != "" {
		parts = append(parts, fmt.Sprintf("unit %s (cgroup %s)", m.Unit, m.Cgroup))
	}
	return strings.Join(parts, ", ")
}

// processMatch resolves user, group and unit of a [[workload]].
func (b *builder) processMatch(key string, f WorkloadFile) ProcessMatch {
	m := ProcessMatch{User: f.User, Group: f.Group, Unit: f.Unit}
	if f.User != "" {
		m.UID = b.lookupID(key+".user", f.User, func(s string) (string, error) {
			u, err := user.Lookup(s)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
	}
	if f.Group != "" {
		m.GID = b.lookupID(key+".group", f.Group, func(s string) (string, error) {
			g, err := user.LookupGroup(s)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
	}
	if f.Unit != "" {
		m.Cgroup = b.unitCgroup(key+".unit", f.Unit)
	}
	return m
}

// lookupID takes a numeric id as is, or resolves a name.
func (b *builder) lookupID(key, s string, lookup func(string) (string, error)) *uint32 {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		id := uint32(n)
		return &id
	}
	idStr, err := lookup(s)
	if err != nil {
		b.addf(key, "%q is neither a number nor known on this host: %v", s, err)
		return nil
	}
	n, err := strconv.ParseUint(idStr, 10, 32)
	if err != nil {
		b.addf(key, "%q resolves to %q, not a numeric id", s, idStr)
		return nil
	}
	id := uint32(n)
	return &id
}

// unitCgroup is the cgroup v2 directory of a systemd unit: a unit name
// ("reviews.service") lives under system.slice; a path ("/system.slice/x.scope"
// or "user.slice/...") is taken as is.
func (b *builder) unitCgroup(key, unit string) string {
	if strings.Contains(unit, "/") {
		p := strings.Trim(path.Clean("/"+unit), "/")
		if p == "" || strings.Contains(p, "..") {
			b.addf(key, "%q is not a cgroup path below /sys/fs/cgroup", unit)
		}
		return p
	}
	dot := strings.LastIndexByte(unit, '.')
	switch {
	case dot <= 0:
		b.addf(key, "%q is not a unit name (e.g. \"reviews.service\") or a cgroup path", unit)
	case !slices.Contains([]string{"service", "scope", "slice"}, unit[dot+1:]):
		b.addf(key, "%q: only .service, .scope and .slice units have a cgroup", unit)
	}
	if strings.HasSuffix(unit, ".slice") {
		return unit
	}
	return "system.slice/" + unit
}

// workloadPorts validates the ports a workload serves.
func (b *builder) workloadPorts(key string, in []int64) []uint16 {
	out := b.ports(key, in)
	for i, p := range out {
		if slices.Contains(out[:i], p) {
			b.addf(key, "port %d is listed twice", p)
		}
		if slices.Contains(agentPorts, p) {
			b.addf(key, "port %d is one of the agent's own ports", p)
		}
	}
	return out
}

// checkSharing accepts workloads that share an address only when each of
// them lists its ports and no port is served twice; it also refuses one
// process owner recognised as two workloads.
func (b *builder) checkSharing(ws []Workload) {
	byAddr := map[netip.Addr][]int{}
	for i, w := range ws {
		for _, a := range w.Addresses {
			byAddr[a] = append(byAddr[a], i)
		}
	}
	for a, idxs := range byAddr {
		if len(idxs) < 2 {
			continue
		}
		if slices.ContainsFunc(idxs, func(i int) bool { return len(ws[i].Ports) == 0 }) {
			for _, i := range idxs[1:] {
				b.addf(fmt.Sprintf("workload[%d].addresses[%d]", i, slices.Index(ws[i].Addresses, a)),
					"%s is already used by workload[%d]; workloads may share an address only when each lists the ports it serves", a, idxs[0])
			}
			continue
		}
		served := map[uint16]int{}
		for _, i := range idxs {
			for _, p := range ws[i].Ports {
				if prev, dup := served[p]; dup {
					b.addf(fmt.Sprintf("workload[%d].ports", i), "port %d on %s is already served by workload %q", p, a, ws[prev].Name)
				}
				served[p] = i
			}
		}
	}
	seen := map[string]int{}
	for i, w := range ws {
		m := w.Processes
		for _, k := range []string{uidKey(m.UID), gidKey(m.GID), cgroupKey(m.Cgroup)} {
			if k == "" {
				continue
			}
			if prev, dup := seen[k]; dup {
				b.addf(fmt.Sprintf("workload[%d]", i), "%s already recognises workload %q", k, ws[prev].Name)
			}
			seen[k] = i
		}
	}
}

func uidKey(id *uint32) string {
	if id == nil {
		return ""
	}
	return fmt.Sprintf("uid %d", *id)
}

func gidKey(id *uint32) string {
	if id == nil {
		return ""
	}
	return fmt.Sprintf("gid %d", *id)
}

func cgroupKey(p string) string {
	if p == "" {
		return ""
	}
	return "cgroup " + p
}

// unmatched validates [capture] unmatched and default_workload against the workloads.
func (b *builder) unmatched(c *Capture, f CaptureFile, ws []Workload) {
	c.Unmatched = orDefault(f.Unmatched, UnmatchedDefault)
	if c.Unmatched != UnmatchedDefault && c.Unmatched != UnmatchedPassthrough {
		b.addf("capture.unmatched", "%q is not one of %q, %q", c.Unmatched, UnmatchedDefault, UnmatchedPassthrough)
	}
	if f.DefaultWorkload == "" {
		return
	}
	ref := f.DefaultWorkload
	if !strings.Contains(ref, "/") {
		ref = DefaultNamespace + "/" + ref
	}
	if !slices.ContainsFunc(ws, func(w Workload) bool { return w.Namespace+"/"+w.Name == ref }) {
		b.addf("capture.default_workload", "no [[workload]] %q on this host", f.DefaultWorkload)
	}
	c.DefaultWorkload = ref
}

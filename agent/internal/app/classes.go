package app

import (
	"fmt"
	"time"

	"github.com/ambient-agent/ambient-agent/agent/internal/capture"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/nft"

	"github.com/ambient-agent/ambient-agent/ports"
)

// FirstClassPort is the outbound port of the first workload recognised by its
// processes; the next ones follow (15101, 15102, ...). Like 15001, these
// ports accept only connections redirected by capture (on loopback).
const FirstClassPort = ports.FirstWorkloadOutbound

// workloadClass is one local workload recognised by its processes: capture
// sends their outbound TCP to its own port, whose listener presents its identity.
type workloadClass struct {
	uid   string // state UID: node/namespace/name
	port  uint16
	match config.ProcessMatch
}

// workloadClasses lists the local workloads recognised by user, group or
// unit, in configuration order, with their ports.
func workloadClasses(cfg *config.Config) []workloadClass {
	var out []workloadClass
	for _, w := range cfg.Workloads {
		if w.Processes.IsZero() {
			continue
		}
		out = append(out, workloadClass{uid: localUID(cfg, w.Namespace+"/"+w.Name), port: uint16(FirstClassPort + len(out)), match: w.Processes})
	}
	return out
}

// resolveClasses builds the rules, reporting units it cannot resolve to missing.
func resolveClasses(classes []workloadClass, missing func(workloadClass, error)) []nft.OutboundClass {
	out := make([]nft.OutboundClass, 0, len(classes))
	for _, c := range classes {
		oc := nft.OutboundClass{Name: c.uid, Port: c.port}
		if c.match.UID != nil {
			oc.UIDs = []uint32{*c.match.UID}
		}
		if c.match.GID != nil {
			oc.GIDs = []uint32{*c.match.GID}
		}
		if c.match.Cgroup != "" {
			cg, err := capture.Cgroup(c.match.Cgroup)
			if err != nil {
				missing(c, err)
			} else {
				oc.Cgroups = []nft.CgroupMatch{cg}
			}
		}
		if len(oc.UIDs)+len(oc.GIDs)+len(oc.Cgroups) > 0 {
			out = append(out, oc)
		}
	}
	return out
}

// recognition says, per local workload UID, how its outbound connections are
// attributed to it, for /config_dump and `ambient-agent workloads`.
func recognition(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, c := range workloadClasses(cfg) {
		out[c.uid] = fmt.Sprintf("%s -> outbound port %d", c.match, c.port)
	}
	for _, w := range cfg.Workloads {
		if uid := localUID(cfg, w.Namespace+"/"+w.Name); out[uid] == "" {
			out[uid] = "source address"
			if cfg.Capture.DefaultWorkload == w.Namespace+"/"+w.Name {
				out[uid] = "default for unrecognised processes"
			}
		}
	}
	return out
}

// localUID is the state UID of this host's workload "namespace/name".
func localUID(cfg *config.Config, nsName string) string { return cfg.Node.Name + "/" + nsName }

// cgroupWatchInterval is how often units' cgroups are checked: a unit that
// starts, or restarts (systemd makes its cgroup anew, with a new id), is
// recognised again within it.
const cgroupWatchInterval = 2 * time.Second

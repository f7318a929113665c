package app

import (
	"context"
	"fmt"
	"reflect"
	"slices"
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
		out = append(out, workloadClass{
			uid:   cfg.Node.Name + "/" + w.Namespace + "/" + w.Name,
			port:  uint16(FirstClassPort + len(out)),
			match: w.Processes,
		})
	}
	return out
}

// outboundClasses are the capture rules of the recognised workloads. A unit
// whose cgroup does not exist yet (not running) is skipped with a warning:
// its processes follow the default until watchCgroups sees it start.
func (a *App) outboundClasses(classes []workloadClass) []nft.OutboundClass {
	return resolveClasses(classes, func(c workloadClass, err error) {
		a.log.Warn("workload unit not running; its processes follow the default until it starts", "workload", c.uid, "unit", c.match.Unit, "err", err)
	})
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
		uid := cfg.Node.Name + "/" + w.Namespace + "/" + w.Name
		if _, ok := out[uid]; ok {
			continue
		}
		out[uid] = "source address"
		if cfg.Capture.DefaultWorkload == w.Namespace+"/"+w.Name {
			out[uid] = "default for unrecognised processes"
		}
	}
	return out
}

// cgroupWatchInterval is how often units' cgroups are checked: a unit that
// starts, or restarts (systemd makes its cgroup anew, with a new id), is
// recognised again within it.
const cgroupWatchInterval = 2 * time.Second

// watchCgroups reinstalls the capture rules when a recognised unit's cgroup
// appears, goes, or is recreated.
func (a *App) watchCgroups(ctx context.Context) error {
	if a.dp.capture == nil || !slices.ContainsFunc(workloadClasses(a.cfg.Load()), func(c workloadClass) bool { return c.match.Cgroup != "" }) {
		return nil
	}
	t := time.NewTicker(cgroupWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		a.refreshClasses()
	}
}

func (a *App) refreshClasses() {
	a.dp.specMu.Lock()
	defer a.dp.specMu.Unlock()
	if a.dp.capture.Installed() == nil {
		return // not installed yet, or removed at shutdown
	}
	classes := resolveClasses(workloadClasses(a.cfg.Load()), func(workloadClass, error) {})
	if reflect.DeepEqual(classes, a.dp.spec.OutboundClasses) {
		return
	}
	spec := a.dp.spec
	spec.OutboundClasses = classes
	if err := a.dp.capture.Install(context.Background(), spec); err != nil {
		a.log.Error("capture rules not updated for a unit's new cgroup", "err", err)
		return
	}
	a.dp.spec = spec
	a.saveSpec(spec)
	a.log.Info("capture rules updated: a recognised unit started, stopped or restarted", "classes", len(classes))
}

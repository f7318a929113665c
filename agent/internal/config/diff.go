package config

import (
	"reflect"
	"sort"
)

// Diff returns the keys whose values differ between two configurations, as
// section-level paths ("log.level", "node", "workload"), sorted.
func Diff(old, new *Config) []string {
	var out []string
	if !reflect.DeepEqual(old.Node, new.Node) {
		out = append(out, "node")
	}
	if !reflect.DeepEqual(old.Identity, new.Identity) {
		out = append(out, "identity")
	}
	if !reflect.DeepEqual(old.Gossip, new.Gossip) {
		out = append(out, "gossip")
	}
	if !reflect.DeepEqual(old.Capture, new.Capture) {
		out = append(out, "capture")
	}
	if !reflect.DeepEqual(old.Workloads, new.Workloads) {
		out = append(out, "workload")
	}
	if !reflect.DeepEqual(old.Remotes, new.Remotes) {
		out = append(out, "remote_workload")
	}
	if !reflect.DeepEqual(old.Services, new.Services) {
		out = append(out, "service")
	}
	if !reflect.DeepEqual(old.Waypoint, new.Waypoint) {
		out = append(out, "waypoint")
	}
	if !reflect.DeepEqual(old.Gateway, new.Gateway) {
		out = append(out, "gateway")
	}
	if !reflect.DeepEqual(old.DNS, new.DNS) {
		out = append(out, "dns")
	}
	if old.Istio != new.Istio {
		out = append(out, "istio")
	}
	if old.Policy != new.Policy {
		out = append(out, "policy")
	}
	if old.Admin != new.Admin {
		out = append(out, "admin")
	}
	if old.Limits != new.Limits {
		out = append(out, "limits")
	}
	if old.Log.Level != new.Log.Level {
		out = append(out, "log.level")
	}
	if old.Log.Format != new.Log.Format {
		out = append(out, "log.format")
	}
	if old.Log.Access != new.Log.Access {
		out = append(out, "log.access")
	}
	sort.Strings(out)
	return out
}

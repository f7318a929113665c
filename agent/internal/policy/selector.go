package policy

import "slices"

// selects reports whether every label of the selector is on the workload.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// selectorIndex finds the WORKLOAD_SELECTOR policies that select a workload without scanning them all:
// each policy is filed under one label of its selector (the smallest key), and a lookup visits only the
// policies filed under the workload's own labels, then checks their whole selector.
type selectorIndex struct {
	byLabel map[label][]*Authorization
	keys    []string // the label keys policies are filed under, sorted
}

type label struct{ key, value string }

func (x *selectorIndex) add(a *Authorization) {
	keys := sortedKeys(a.Selector)
	if len(keys) == 0 {
		return
	}
	l := label{keys[0], a.Selector[keys[0]]}
	if x.byLabel == nil {
		x.byLabel = map[label][]*Authorization{}
	}
	x.byLabel[l] = append(x.byLabel[l], a)
	if i, found := slices.BinarySearch(x.keys, l.key); !found {
		x.keys = slices.Insert(x.keys, i, l.key)
	}
}

// collect appends the policies that select labels to out. It walks whichever is shorter: the workload's
// labels or the keys policies are filed under (usually just "app").
func (x *selectorIndex) collect(labels map[string]string, out []*Authorization) []*Authorization {
	if len(x.byLabel) == 0 || len(labels) == 0 {
		return out
	}
	visit := func(k, v string) {
		for _, a := range x.byLabel[label{k, v}] {
			if selects(a.Selector, labels) {
				out = append(out, a)
			}
		}
	}
	if len(x.keys) <= len(labels) {
		for _, k := range x.keys {
			if v, ok := labels[k]; ok {
				visit(k, v)
			}
		}
		return out
	}
	for k, v := range labels {
		visit(k, v)
	}
	return out
}

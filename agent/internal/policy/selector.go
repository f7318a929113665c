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
// each policy is filed under one of its labels (the smallest key), and a lookup visits only the policies
// filed under the workload's own labels, then checks their full selector.
type selectorIndex struct {
	byLabel map[string]map[string][]*Authorization // label key -> value -> policies
}

func (x *selectorIndex) add(a *Authorization) {
	keys := sortedKeys(a.Selector)
	if len(keys) == 0 {
		return
	}
	k := keys[0]
	if x.byLabel == nil {
		x.byLabel = map[string]map[string][]*Authorization{}
	}
	if x.byLabel[k] == nil {
		x.byLabel[k] = map[string][]*Authorization{}
	}
	x.byLabel[k][a.Selector[k]] = append(x.byLabel[k][a.Selector[k]], a)
}

// collect appends the policies that select labels to out.
func (x *selectorIndex) collect(labels map[string]string, out []*Authorization) []*Authorization {
	if len(x.byLabel) == 0 {
		return out
	}
	for k, v := range labels {
		for _, a := range x.byLabel[k][v] {
			if selects(a.Selector, labels) {
				out = append(out, a)
			}
		}
	}
	return out
}

// all lists the indexed policies (in no particular order).
func (x *selectorIndex) all() []*Authorization {
	var out []*Authorization
	for _, byValue := range x.byLabel {
		for _, as := range byValue {
			out = append(out, as...)
		}
	}
	return slices.Clip(out)
}

package discovery

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"
)

// Interning. The workloads of a mesh repeat a few label sets, namespaces, service accounts and trust domains
// many times over: each decoded workload shares the one copy of each instead of holding its own (a map of four
// labels is about 300 bytes). What is shared is never modified: decoded workloads are read-only.

// maxLabelBytes bounds the label sets kept for sharing (their keys, about their size); past it the table starts
// again (sets already shared stay valid, new ones are shared anew).
const maxLabelBytes = 4 << 20

var labelSets struct {
	sync.Mutex
	m     map[string]map[string]string
	bytes int
}

// internLabels returns the shared map with the content of labels (nil for none).
func internLabels(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		b.WriteString(strconv.Itoa(len(k)))
		b.WriteByte(':')
		b.WriteString(k)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	key := b.String()
	labelSets.Lock()
	defer labelSets.Unlock()
	if shared, ok := labelSets.m[key]; ok {
		return shared
	}
	if labelSets.m == nil || labelSets.bytes+len(key) > maxLabelBytes {
		labelSets.m, labelSets.bytes = map[string]map[string]string{}, 0
	}
	labelSets.m[key] = labels
	labelSets.bytes += len(key)
	return labels
}

// intern returns the canonical copy of s.
func intern(s string) string { return unique.Make(s).Value() }

package telemetry

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// labelSet is one distinct set of connection labels, shared by every connection that has it, with its metric
// children resolved once: opening, closing and counting the bytes of a connection then hash no label values, and
// a connection holds a pointer rather than its own copy of 26 labels. Sets are never dropped, as the series they
// name are not. The counters' children are resolved on first use, so that no series appears before it counts
// something (a set made for labels completed after Open never counts an opening).
type labelSet struct {
	labels                         ConnLabels
	open                           prometheus.Gauge
	opened, closed, received, sent atomic.Pointer[prometheus.Counter]
}

// labelSet returns the set of l, made on first use.
func (m *Metrics) labelSet(l ConnLabels) *labelSet {
	m.setsMu.RLock()
	set := m.sets[l]
	m.setsMu.RUnlock()
	if set != nil {
		return set
	}
	m.setsMu.Lock()
	defer m.setsMu.Unlock()
	if set = m.sets[l]; set == nil {
		set = &labelSet{labels: l, open: m.open.WithLabelValues(l.Reporter)}
		m.sets[l] = set
	}
	return set
}

// child is the set's child of vec (response_flags "-") cached in p.
func (s *labelSet) child(p *atomic.Pointer[prometheus.Counter], vec *prometheus.CounterVec) prometheus.Counter {
	if c := p.Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(s.labels.values(FlagNone)...) // the same child whoever asks first
	p.Store(&c)
	return c
}

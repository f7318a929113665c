package telemetry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Carried serves this agent's metrics together with those of the agents a handoff replaced, so that a counter of
// the data path never goes back across an upgrade or a restart. A replaced agent writes its counters to a file
// (prefix + its pid) while it drains and once more as it exits (WriteOwn); the agent that serves adds every such
// file to what it gathers, and once the file's agent has exited, folds it into a base it keeps (and writes on in
// turn when it is replaced).
//
// Carried: the counters and histograms of the agent's own families (istio_*, ambient_agent_*), and the open
// sockets of a replaced agent while it still runs. Not carried: other gauges (a process's own state) and go_* and
// process_* (a process's own runtime).
type Carried struct {
	own    prometheus.Gatherer
	prefix string
	self   int

	mu   sync.Mutex
	base []*dto.MetricFamily // of replaced agents that have exited
}

// liveGauges are the gauges summed over the replaced agents that still run.
var liveGauges = map[string]bool{"istio_tcp_sockets_open": true}

// NewCarried gathers own and the files named prefix + pid.
func NewCarried(own prometheus.Gatherer, prefix string) *Carried {
	return &Carried{own: own, prefix: prefix, self: os.Getpid()}
}

// Forget removes the files of replaced agents, unread: a fresh start has no predecessor (what is there was
// left by an agent stopped long ago).
func (c *Carried) Forget() {
	files, _ := filepath.Glob(c.prefix + "*")
	for _, f := range files {
		os.Remove(f)
	}
}

// Gather is this agent's families with the replaced agents' added.
func (c *Carried) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := c.own.Gather()
	if err != nil {
		return nil, err
	}
	live := c.collect()
	c.mu.Lock()
	defer c.mu.Unlock()
	return merge(mfs, merge(clone(c.base), live)), nil
}

// WriteOwn writes this agent's carried families, and what it carries itself, for the agent that replaced it.
func (c *Carried) WriteOwn() error {
	mfs, err := c.own.Gather()
	if err != nil {
		return err
	}
	c.mu.Lock()
	out := merge(clone(c.base), carriedOnly(mfs, true))
	c.mu.Unlock()
	path := c.prefix + strconv.Itoa(c.self)
	tmp := path + ".tmp"
	os.Remove(tmp)
	// O_EXCL|O_NOFOLLOW: never through a file or link someone else put there.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("telemetry: carried metrics: %w", err)
	}
	enc := expfmt.NewEncoder(f, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range out {
		if err = enc.Encode(mf); err != nil {
			break
		}
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("telemetry: carried metrics: %w", err)
	}
	return nil
}

// collect reads the files of the replaced agents that still run, and folds into the base those of the ones that
// have exited (a file is claimed by renaming it first: it is folded once).
func (c *Carried) collect() []*dto.MetricFamily {
	files, _ := filepath.Glob(c.prefix + "*")
	var live []*dto.MetricFamily
	for _, f := range files {
		pid, err := strconv.Atoi(strings.TrimPrefix(f, c.prefix))
		if err != nil || pid == c.self {
			continue // ours, a temporary or a claimed file
		}
		if running(pid) {
			if mfs, err := readFamilies(f); err == nil {
				live = merge(live, carriedOnly(mfs, true))
			}
			continue
		}
		claimed := f + ".folding." + strconv.Itoa(c.self)
		if os.Rename(f, claimed) != nil {
			continue
		}
		mfs, err := readFamilies(claimed)
		os.Remove(claimed)
		if err == nil {
			c.mu.Lock()
			c.base = merge(c.base, carriedOnly(mfs, false))
			c.mu.Unlock()
		}
	}
	return live
}

func running(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// readFamilies reads a file of carried metrics: a regular file of this process's own user, or nothing (in a
// directory others may write to, such as /tmp, a file of theirs is not ours to count).
func readFamilies(path string) ([]*dto.MetricFamily, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.Mode().IsRegular() || int(st.Uid) != os.Getuid() {
		return nil, fmt.Errorf("telemetry: %s is not a file of this agent's user", path)
	}
	dec := expfmt.NewDecoder(f, expfmt.NewFormat(expfmt.TypeProtoDelim))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		out = append(out, mf)
	}
}

// carriedOnly keeps the families a replaced agent hands on; live: it still runs (its open sockets count).
func carriedOnly(mfs []*dto.MetricFamily, live bool) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "istio_") && !strings.HasPrefix(name, "ambient_agent_") {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM:
			out = append(out, mf)
		case dto.MetricType_GAUGE:
			if live && liveGauges[name] {
				out = append(out, mf)
			}
		}
	}
	return out
}

func clone(mfs []*dto.MetricFamily) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, len(mfs))
	for i, mf := range mfs {
		out[i] = proto.Clone(mf).(*dto.MetricFamily)
	}
	return out
}

// merge adds b's metrics to a's (a is changed and returned): a series of both is summed, others are added.
func merge(a, b []*dto.MetricFamily) []*dto.MetricFamily {
	for _, mf := range b {
		i := slices.IndexFunc(a, func(x *dto.MetricFamily) bool { return x.GetName() == mf.GetName() })
		if i < 0 {
			a = append(a, proto.Clone(mf).(*dto.MetricFamily))
			continue
		}
		if a[i].GetType() != mf.GetType() {
			continue
		}
		for _, m := range mf.Metric {
			j := slices.IndexFunc(a[i].Metric, func(x *dto.Metric) bool { return sameLabels(x, m) })
			if j < 0 {
				a[i].Metric = append(a[i].Metric, proto.Clone(m).(*dto.Metric))
				continue
			}
			add(a[i].Metric[j], m)
		}
	}
	return a
}

func sameLabels(x, y *dto.Metric) bool {
	return slices.EqualFunc(x.Label, y.Label, func(a, b *dto.LabelPair) bool {
		return a.GetName() == b.GetName() && a.GetValue() == b.GetValue()
	})
}

// add adds m's value to into's: counters and gauges, or histograms of the same buckets.
func add(into, m *dto.Metric) {
	switch {
	case into.Counter != nil && m.Counter != nil:
		into.Counter.Value = proto.Float64(into.Counter.GetValue() + m.Counter.GetValue())
	case into.Gauge != nil && m.Gauge != nil:
		into.Gauge.Value = proto.Float64(into.Gauge.GetValue() + m.Gauge.GetValue())
	case into.Histogram != nil && m.Histogram != nil && len(into.Histogram.Bucket) == len(m.Histogram.Bucket):
		h, o := into.Histogram, m.Histogram
		h.SampleCount = proto.Uint64(h.GetSampleCount() + o.GetSampleCount())
		h.SampleSum = proto.Float64(h.GetSampleSum() + o.GetSampleSum())
		for k, b := range h.Bucket {
			if b.GetUpperBound() == o.Bucket[k].GetUpperBound() {
				b.CumulativeCount = proto.Uint64(b.GetCumulativeCount() + o.Bucket[k].GetCumulativeCount())
			}
		}
	}
}

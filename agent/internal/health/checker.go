package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"
)

// Status of one workload.
type Status struct {
	Healthy   bool
	Since     time.Time // when Healthy last changed, or when the workload was first Set
	LastError string    // why the latest check failed; "" if it succeeded or none ran yet
	Checks    uint64    // checks completed
	Failures  uint64    // of which failed
}

// Checker runs the checks of this host's workloads. Set and Status are safe
// from any goroutine; Run owns the probe goroutines.
type Checker struct {
	prober   *prober
	log      *slog.Logger
	onChange func(workload string, s Status)
	results  chan result

	mu        sync.Mutex
	workloads map[string]*workload
	runCtx    context.Context // nil unless Run is running
	ran       bool
	probes    sync.WaitGroup
}

// workload is one check and its state. Set replaces the pointer when the check
// changes, so results of a stopped probe are recognised as stale.
type workload struct {
	name    string
	check   Check // defaults resolved
	status  Status
	okRun   int                // consecutive successes
	failRun int                // consecutive failures
	stop    context.CancelFunc // stops the probe; nil if none runs
}

// result is one check's outcome, sent by a probe to Run.
type result struct {
	w   *workload
	err error
	at  time.Time
}

// New returns a Checker with no checks. dial is how checks connect (the caller
// passes a net.Dialer whose socket mark keeps checks out of capture); nil
// means a plain net.Dialer. onChange, if not nil, is called from Run's
// goroutine, never concurrently with itself, each time a workload's Healthy
// flips; it is not called for a workload's initial (healthy) state. A call may
// still arrive for a workload that a concurrent Set just removed.
func New(dial func(ctx context.Context, network, addr string) (net.Conn, error), log *slog.Logger, onChange func(workload string, s Status)) *Checker {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func(string, Status) {}
	}
	return &Checker{
		prober:    newProber(dial),
		log:       log,
		onChange:  onChange,
		results:   make(chan result),
		workloads: make(map[string]*workload),
	}
}

// Set replaces the set of checks, keyed by workload name. If any check is
// invalid it changes nothing and returns why. Otherwise:
//   - a new workload starts healthy and is checked at once;
//   - a removed workload's probe stops and its Status is forgotten;
//   - an unchanged check keeps its state and its timing;
//   - a changed check keeps its Status but restarts: its consecutive counts
//     reset and it is checked at once.
func (c *Checker) Set(checks map[string]Check) error {
	resolved := make(map[string]Check, len(checks))
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(checks)) {
		k := checks[name]
		if name == "" {
			errs = append(errs, errors.New("health: a workload has no name"))
			continue
		}
		if msg := k.problems(); msg != "" {
			errs = append(errs, fmt.Errorf("health: workload %q: %s", name, msg))
			continue
		}
		resolved[name] = k.withDefaults()
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	replaced := make(map[string]*workload)
	for name, old := range c.workloads {
		k, keep := resolved[name]
		if keep && k == old.check {
			continue
		}
		old.halt()
		delete(c.workloads, name)
		if keep {
			replaced[name] = &workload{name: name, check: k, status: old.status}
		}
	}
	for name, k := range resolved {
		if _, ok := c.workloads[name]; ok {
			continue
		}
		w := replaced[name]
		if w == nil {
			w = &workload{name: name, check: k, status: Status{Healthy: true, Since: now}}
		}
		c.workloads[name] = w
		c.start(w)
	}
	return nil
}

// Status returns the workload's status, if it is being checked.
func (c *Checker) Status(workload string) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.workloads[workload]
	if !ok {
		return Status{}, false
	}
	return w.status, true
}

// Run runs every probe until ctx is done, then stops them all and returns nil
// once they have stopped. It may be called once.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran {
		c.mu.Unlock()
		return errors.New("health: Run called twice")
	}
	c.ran = true
	c.runCtx = ctx
	for _, w := range c.workloads {
		c.start(w)
	}
	c.mu.Unlock()

	for {
		select {
		case r := <-c.results:
			c.apply(r)
		case <-ctx.Done():
			c.mu.Lock()
			c.runCtx = nil
			for _, w := range c.workloads {
				w.halt()
			}
			c.mu.Unlock()
			c.probes.Wait()
			return nil
		}
	}
}

// start runs w's probe if Run is running and it has none. Called with mu held.
func (c *Checker) start(w *workload) {
	if c.runCtx == nil || w.stop != nil {
		return
	}
	ctx, stop := context.WithCancel(c.runCtx)
	w.stop = stop
	c.probes.Go(func() { c.probe(ctx, w) })
}

// halt stops w's probe, if any. Called with mu held.
func (w *workload) halt() {
	if w.stop != nil {
		w.stop()
		w.stop = nil
	}
}

// probe checks w at once and then every Interval until ctx is done, sending
// each outcome to Run. A check cut short by ctx is not reported.
func (c *Checker) probe(ctx context.Context, w *workload) {
	tick := time.NewTicker(w.check.Interval)
	defer tick.Stop()
	for {
		err := c.prober.check(ctx, w.check)
		if ctx.Err() != nil {
			return
		}
		select {
		case c.results <- result{w: w, err: err, at: time.Now()}:
		case <-ctx.Done():
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// apply records r and, if the workload flipped, logs it and calls onChange.
func (c *Checker) apply(r result) {
	c.mu.Lock()
	w := r.w
	if c.workloads[w.name] != w {
		c.mu.Unlock() // removed or replaced since the check started
		return
	}
	flipped := w.record(r.err, r.at)
	s := w.status
	c.mu.Unlock()

	if r.err != nil && !flipped {
		c.log.Debug("health: check failed", "workload", w.name, "err", r.err)
	}
	if !flipped {
		return
	}
	if s.Healthy {
		c.log.Info("health: workload healthy", "workload", w.name, "target", describe(w.check))
	} else {
		c.log.Warn("health: workload unhealthy", "workload", w.name, "err", s.LastError,
			"consecutive_failures", w.check.UnhealthyThreshold)
	}
	c.onChange(w.name, s)
}

// record counts one check and reports whether Healthy flipped.
func (w *workload) record(err error, at time.Time) bool {
	w.status.Checks++
	if err == nil {
		w.status.LastError = ""
		w.okRun++
		w.failRun = 0
		if !w.status.Healthy && w.okRun >= w.check.HealthyThreshold {
			w.status.Healthy, w.status.Since = true, at
			return true
		}
		return false
	}
	w.status.Failures++
	w.status.LastError = err.Error()
	w.failRun++
	w.okRun = 0
	if w.status.Healthy && w.failRun >= w.check.UnhealthyThreshold {
		w.status.Healthy, w.status.Since = false, at
		return true
	}
	return false
}

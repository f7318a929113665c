package health

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Kind is how a workload is checked.
type Kind string

const (
	// KindTCP: a TCP connect that succeeds within Timeout, then close.
	KindTCP Kind = "tcp"
	// KindHTTP: GET http://<target><path>, healthy on a 2xx or 3xx status.
	KindHTTP Kind = "http"
)

// Defaults for the zero values of a Check.
const (
	DefaultInterval           = 2 * time.Second
	DefaultTimeout            = time.Second // or Interval, if that is shorter
	DefaultUnhealthyThreshold = 2
	DefaultHealthyThreshold   = 1
	DefaultPath               = "/"
)

// Check says how to check one workload. Zero durations, thresholds and path
// mean the defaults above.
type Check struct {
	Kind               Kind
	Target             netip.AddrPort // workload address + port
	Path               string         // http only, default "/"
	Interval           time.Duration  // between the starts of two checks
	Timeout            time.Duration  // per check, at most Interval
	UnhealthyThreshold int            // consecutive failures to turn unhealthy
	HealthyThreshold   int            // consecutive successes to turn healthy again
}

// withDefaults returns k with every zero field resolved.
func (k Check) withDefaults() Check {
	if k.Interval == 0 {
		k.Interval = DefaultInterval
	}
	if k.Timeout == 0 {
		k.Timeout = DefaultTimeout
		if k.Interval > 0 {
			k.Timeout = min(k.Timeout, k.Interval)
		}
	}
	if k.UnhealthyThreshold == 0 {
		k.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if k.HealthyThreshold == 0 {
		k.HealthyThreshold = DefaultHealthyThreshold
	}
	if k.Kind == KindHTTP && k.Path == "" {
		k.Path = DefaultPath
	}
	return k
}

// Validate reports what is wrong with k, after defaults, or nil.
func (k Check) Validate() error {
	if msg := k.problems(); msg != "" {
		return errors.New("health: " + msg)
	}
	return nil
}

// problems lists what is wrong with k, after defaults, or returns "".
func (k Check) problems() string {
	k = k.withDefaults()
	var errs []string
	switch k.Kind {
	case KindTCP:
		if k.Path != "" {
			errs = append(errs, fmt.Sprintf("path %q: only http checks have a path", k.Path))
		}
	case KindHTTP:
		if err := validatePath(k.Path); err != nil {
			errs = append(errs, err.Error())
		}
	default:
		errs = append(errs, fmt.Sprintf("unknown kind %q (want %q or %q)", k.Kind, KindTCP, KindHTTP))
	}
	switch {
	case !k.Target.Addr().IsValid():
		errs = append(errs, "no target address")
	case k.Target.Port() == 0:
		errs = append(errs, fmt.Sprintf("target %s: port 0", k.Target.Addr()))
	}
	if k.Interval < 0 {
		errs = append(errs, fmt.Sprintf("interval %v is negative", k.Interval))
	}
	if k.Timeout < 0 {
		errs = append(errs, fmt.Sprintf("timeout %v is negative", k.Timeout))
	} else if k.Interval > 0 && k.Timeout > k.Interval {
		errs = append(errs, fmt.Sprintf("timeout %v is longer than the interval %v", k.Timeout, k.Interval))
	}
	if k.UnhealthyThreshold < 1 {
		errs = append(errs, fmt.Sprintf("unhealthy threshold %d: want at least 1", k.UnhealthyThreshold))
	}
	if k.HealthyThreshold < 1 {
		errs = append(errs, fmt.Sprintf("healthy threshold %d: want at least 1", k.HealthyThreshold))
	}
	return strings.Join(errs, "; ")
}

func validatePath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: must start with /", p)
	}
	if strings.ContainsAny(p, " #") {
		return fmt.Errorf("path %q: no spaces or fragment allowed", p)
	}
	if _, err := url.ParseRequestURI(p); err != nil {
		return fmt.Errorf("path %q: %w", p, err)
	}
	return nil
}

// DetectionBound is the longest time, after defaults, between a workload
// starting to fail and this checker reporting it unhealthy:
// Interval*UnhealthyThreshold + Timeout.
func (k Check) DetectionBound() time.Duration {
	k = k.withDefaults()
	return k.Interval*time.Duration(k.UnhealthyThreshold) + k.Timeout
}

// RecoveryBound is the same bound for turning healthy again:
// Interval*HealthyThreshold + Timeout.
func (k Check) RecoveryBound() time.Duration {
	k = k.withDefaults()
	return k.Interval*time.Duration(k.HealthyThreshold) + k.Timeout
}

package policy

import (
	"strings"

	"github.com/ambient-agent/ambient-agent/agent/internal/yamldocs"
)

// Source is where a resource, a problem or a warning comes from.
type Source = yamldocs.Source

// Problem is one thing wrong with a policy file: the file cannot be used.
type Problem struct {
	Source
	Policy string // "namespace/name" when known
	Field  string // field path, e.g. "spec.rules[0].from[1].source.ipBlocks[2]"
	Msg    string
	Err    error // the underlying error, for errors.Is (e.g. fs.ErrNotExist for a missing directory)
}

func (p Problem) String() string { return describe(p.Source, p.Policy, p.Field, p.Msg) }

// Problems is the error LoadDir returns: every problem found, in file and document order.
type Problems []Problem

// Unwrap exposes the underlying errors: errors.Is(err, fs.ErrNotExist) tells a missing policy directory.
func (ps Problems) Unwrap() []error {
	var errs []error
	for _, p := range ps {
		if p.Err != nil {
			errs = append(errs, p.Err)
		}
	}
	return errs
}

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Warning is something a user should know about a policy that is nevertheless used: an L7 field dropped,
// a policy skipped, a policy meant for a waypoint. Callers log them.
type Warning struct {
	Source
	Policy string // "namespace/name"
	Field  string
	Msg    string
}

func (w Warning) String() string { return describe(w.Source, w.Policy, w.Field, w.Msg) }

func describe(src Source, policy, field, msg string) string {
	var b strings.Builder
	b.WriteString(src.String())
	b.WriteString(": ")
	if policy != "" {
		b.WriteString(policy)
		b.WriteString(": ")
	}
	if field != "" {
		b.WriteString(field)
		b.WriteString(": ")
	}
	b.WriteString(msg)
	return b.String()
}

package policy

import (
	"errors"
	"os"

	"github.com/ambient-agent/ambient-agent/agent/internal/yamldocs"
)

// This is the only file of the package that touches the filesystem.

// maxFileSize bounds what LoadDir reads: policy files are small, and a huge file is a mistake.
const maxFileSize = 16 << 20

// LoadDir reads every *.yaml and *.yml file directly in dir (not in subdirectories; hidden files are
// skipped), in name order, with Parse. The load is all or nothing: if any file has a problem, or two files
// define the same resource, it returns no resources and a Problems error listing every problem, so the
// caller keeps the set it has.
func LoadDir(dir string) ([]Resource, error) {
	files, unreadable, err := yamldocs.ReadDir(dir, maxFileSize)
	if err != nil {
		return nil, Problems{{Source: Source{File: dir}, Msg: "cannot read the policy directory: " + unwrapPathError(err), Err: err}}
	}
	var resources []Resource
	var problems Problems
	for _, u := range unreadable {
		problems = append(problems, Problem{Source: Source{File: u.Path}, Msg: u.Msg, Err: u.Err})
	}
	for _, f := range files {
		rs, ps := Parse(f.Path, f.Data)
		resources = append(resources, rs...)
		problems = append(problems, ps...)
	}
	problems = append(problems, Duplicates(resources)...)
	if len(problems) > 0 {
		return nil, problems
	}
	return resources, nil
}

// Load is LoadDir then Compile: what the agent does on start, on a file change and on SIGHUP, and what
// `authz check` does. On error the caller keeps its current Set. A missing directory is an error too;
// errors.Is(err, fs.ErrNotExist) tells it apart, for a caller that treats it as "no policy".
func Load(dir string, opts Options) (*Set, []Warning, error) {
	resources, err := LoadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	set, warnings := Compile(resources, opts)
	return set, warnings, nil
}

func unwrapPathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

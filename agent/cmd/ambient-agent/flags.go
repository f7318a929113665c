package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// newFlags returns a flag set that reports errors instead of exiting, so that
// every command shares the exit-code contract: its usage goes to stdout when
// asked for (-h) and to stderr with a usage error (parseFlags).
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ambient-agent %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and returns the exit code to use when parsing ended the
// command: 0 for -h (the usage on stdout), 2 for wrong usage (the error and the
// usage on stderr), -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	_, code := parseFlagsArgs(fs, args, stdout, 0)
	return code
}

// parseFlagsArgs is parseFlags for a command that takes up to max arguments besides its flags, before, between
// or after them; it returns them.
func parseFlagsArgs(fs *flag.FlagSet, args []string, stdout io.Writer, max int) ([]string, int) {
	var pos []string
	for {
		code := parseOnce(fs, args, stdout)
		if code >= 0 || fs.NArg() == 0 {
			if code < 0 && len(pos) > max {
				fmt.Fprintf(fs.Output(), "ambient-agent %s: unexpected argument %q\n", fs.Name(), pos[max])
				fs.Usage()
				return nil, 2
			}
			return pos, code
		}
		if rest := fs.Args(); len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...) // after "--" every argument is one, even one that starts with "-"
			if len(pos) > max {
				fmt.Fprintf(fs.Output(), "ambient-agent %s: unexpected argument %q\n", fs.Name(), pos[max])
				fs.Usage()
				return nil, 2
			}
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseOnce parses flags up to the first argument that is not one.
func parseOnce(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	stderr := fs.Output()
	fs.SetOutput(io.Discard) // the flag package prints the error and the usage itself: print them here instead
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "ambient-agent %s: %v\n", fs.Name(), err)
		fs.Usage()
		return 2
	}
	return -1
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", config.DefaultPath, "configuration `file`")
}

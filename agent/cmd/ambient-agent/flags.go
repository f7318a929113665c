package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

// newFlags returns a flag set that prints its usage to stderr and reports errors
// instead of exiting, so that every command shares the exit-code contract.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ambient-agent %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and returns the exit code to use when parsing ended the
// command: 0 for -h, 2 for wrong usage, -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(fs.Output(), "ambient-agent %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2
	}
	return -1
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", config.DefaultPath, "configuration `file`")
}

package main

import (
	"fmt"
	"io"

	"github.com/ambient-agent/ambient-agent/agent/internal/app"
	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "run [-config FILE]", stderr)
	path := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	return app.Main(*path, stderr)
}

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", "validate [-config FILE]", stderr)
	path := configFlag(fs)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printLoadError(stderr, err)
		return 1
	}
	// The policies are part of what a reload applies: check them too.
	if _, _, err := app.LoadPolicies(cfg.Policy); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "version", stderr)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	fmt.Fprintf(stdout, "ambient-agent %s\n", app.Version)
	return 0
}

func runCleanup(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cleanup", "cleanup", stderr)
	if code := parseFlags(fs, args, stdout); code >= 0 {
		return code
	}
	if err := app.Cleanup(); err != nil {
		fmt.Fprintf(stderr, "ambient-agent cleanup: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

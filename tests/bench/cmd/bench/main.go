// Command bench runs the data-path benchmarks on the netns lab and prints the table (`make bench`, as root).
//
//	go run ./tests/bench/cmd/bench [-quick] [-rounds N] [-out FILE] [-profile DIR] [-agent BIN] [-compare BIN] [-markdown]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ambient-agent/ambient-agent/tests/bench"
	"github.com/ambient-agent/ambient-agent/tests/lab"
)

func main() {
	var o bench.Options
	flag.BoolVar(&o.Quick, "quick", false, "the smoke run: one short round, under a minute")
	flag.IntVar(&o.Rounds, "rounds", 0, "rounds (default 1 quick, 5 full)")
	flag.StringVar(&o.Agent, "agent", "", "a prebuilt ambient-agent binary (default: build the working tree)")
	flag.StringVar(&o.Compare, "compare", "", "a second prebuilt agent to measure in the same rounds (before/after)")
	flag.StringVar(&o.ProfileDir, "profile", "", "write CPU and heap profiles of both agents into this directory")
	out := flag.String("out", filepath.Join(lab.RepoRoot(), "tests", "bench", "results.json"), "write the results as JSON here")
	markdown := flag.Bool("markdown", false, "also print the table as Markdown (for docs/benchmarks.md)")
	waypointOnly := flag.Bool("waypoint-only", false, "measure only the waypoint (HTTP at L7 against L4) and print it")
	flag.Parse()
	o.Progress = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...) }

	t := &benchT{}
	code := 0
	func() {
		defer t.recover(&code)
		// Ctrl-C still removes the lab: the run fails, cleanups run.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			<-sig
			fmt.Fprintln(os.Stderr, "interrupted: cleaning up")
			t.runCleanups()
			os.Exit(130)
		}()
		if *waypointOnly {
			w := bench.RunWaypoint(t, o)
			fmt.Println()
			w.Print(os.Stdout)
			return
		}
		res := bench.Run(t, o)
		if err := res.WriteJSON(*out); err != nil {
			t.Fatal(err)
		}
		fmt.Println()
		res.Print(os.Stdout)
		if *markdown {
			fmt.Println()
			res.Markdown(os.Stdout)
		}
		fmt.Printf("\nresults: %s\n", *out)
		if bad := res.Check(); len(bad) > 0 {
			for _, b := range bad {
				fmt.Fprintln(os.Stderr, "not sane:", b)
			}
			code = 1
		}
	}()
	t.runCleanups()
	os.Exit(code)
}

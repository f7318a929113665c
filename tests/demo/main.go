// Command demo brings up a small mesh of lab hosts (network namespaces) on this
// machine, each running the real ambient-agent, and shows what each host is
// doing. It cleans up on exit and on Ctrl-C. Run it with `make demo` (as root).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

func main() {
	hosts := flag.Int("hosts", 3, "number of hosts")
	once := flag.Bool("once", false, "show the mesh once and exit (for smoke tests)")
	flag.Parse()

	d := newDemoT()
	code := 0
	func() {
		defer d.recover(&code)
		run(d, *hosts, *once)
	}()
	d.runCleanups()
	os.Exit(code)
}

func run(d *demoT, n int, once bool) {
	bin, err := lab.BuildAgent(d.TempDir())
	if err != nil {
		d.Fatal(err)
	}
	step("building a lab of %d hosts (network namespaces on one bridge)", n)
	l := lab.New(d, n)
	var agents []*lab.Agent
	for _, h := range l.Hosts {
		cfg := fmt.Sprintf("[node]\nname = %q\n[identity]\ndir = %q\n\n[[workload]]\nname = \"app-%s\"\naddresses = [%q]\n",
			h.Name, h.Issue(bin, "default", "default"), h.Name, h.Addr)
		agents = append(agents, h.StartAgent(bin, cfg))
	}
	for _, a := range agents {
		a.WaitReady(d, 15*time.Second)
	}
	show(agents)
	if once {
		return
	}
	step("the mesh is up; press Ctrl-C to stop and clean up")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			step("stopping agents and removing the lab")
			return
		case <-tick.C:
			show(agents)
		}
	}
}

func show(agents []*lab.Agent) {
	fmt.Printf("\n%-5s %-16s %-8s %-10s %s\n", "HOST", "ADDRESS", "READY", "UPTIME", "WORKLOADS")
	for _, a := range agents {
		var dump struct {
			Uptime string `json:"uptime"`
			Ready  bool   `json:"ready"`
			Config struct {
				Workloads []struct {
					Name      string   `json:"name"`
					Namespace string   `json:"namespace"`
					Addresses []string `json:"addresses"`
				} `json:"workloads"`
			} `json:"config"`
		}
		body, err := a.Admin("/config_dump")
		if err == nil {
			err = json.Unmarshal([]byte(body), &dump)
		}
		if err != nil {
			fmt.Printf("%-5s %-16s error: %v\n", a.Host.Name, a.Host.Addr, err)
			continue
		}
		var wl []string
		for _, w := range dump.Config.Workloads {
			wl = append(wl, fmt.Sprintf("%s/%s %v", w.Namespace, w.Name, w.Addresses))
		}
		fmt.Printf("%-5s %-16s %-8v %-10s %v\n", a.Host.Name, a.Host.Addr, dump.Ready, dump.Uptime, wl)
	}
	fmt.Println()
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// listeningPorts reads the TCP ports in LISTEN state from the kernel's socket
// tables of the current network namespace.
func listeningPorts() map[uint16]bool {
	ports := map[uint16]bool{}
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			local := fields[1]
			i := strings.LastIndexByte(local, ':')
			if i < 0 {
				continue
			}
			if p, err := strconv.ParseUint(local[i+1:], 16, 16); err == nil {
				ports[uint16(p)] = true
			}
		}
		f.Close()
	}
	return ports
}

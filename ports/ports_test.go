package ports

import "testing"

func TestIllegalAndAgent(t *testing.T) {
	for _, p := range []uint16{Outbound, InboundPlaintext, HBONE} {
		if !Illegal(p) || !Agent(p) {
			t.Errorf("port %d: illegal %v, agent %v; want both", p, Illegal(p), Agent(p))
		}
	}
	for _, p := range []uint16{Admin, Metrics, Readiness, DNS, FirstWorkloadOutbound, FirstWorkloadOutbound + MaxWorkloadOutbound - 1} {
		if Illegal(p) || !Agent(p) {
			t.Errorf("port %d: illegal %v, agent %v; want an agent port a tunnel may name", p, Illegal(p), Agent(p))
		}
	}
	for _, p := range []uint16{80, 15007, 15002, FirstWorkloadOutbound + MaxWorkloadOutbound} {
		if Illegal(p) || Agent(p) {
			t.Errorf("port %d: illegal %v, agent %v; want neither", p, Illegal(p), Agent(p))
		}
	}
}

package policy

import "testing"

// The store enforces the directory's policies merged with istiod's last
// authorizations: a change of either keeps the other, and istiod's empty set
// (it withdrew everything) is not the same as none sent yet.
func TestStoreMergesBothSources(t *testing.T) {
	local, _ := compileYAML(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-sleep, namespace: default}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/default/sa/sleep"]}}]}]
`)
	fromIstiod := []XDSAuthorization{{Name: "deny-all", Namespace: "default", Scope: XDSScopeNamespace, Action: XDSActionDeny,
		Groups: []XDSGroup{xGroup(xRules(XDSMatch{DestinationPorts: []uint16{8080}}))}}}
	sleep, other := conn("spiffe://cluster.local/ns/default/sa/sleep", "10.0.0.9"), conn("spiffe://cluster.local/ns/default/sa/other", "10.0.0.9")
	allowed := func(s *Store, c Conn) bool { return s.Load().Evaluate(c).Allow }

	s := NewStore(local)
	if allowed(s, sleep) || !allowed(s, other) {
		t.Fatal("the directory's DENY is not enforced alone")
	}
	if set, _ := s.SetXDS(fromIstiod); set != s.Load() || allowed(s, other) || allowed(s, sleep) {
		t.Fatal("istiod's DENY is not enforced together with the directory's")
	}
	if s.SetLocal(nil); allowed(s, other) {
		t.Fatal("a directory change dropped istiod's authorizations")
	}
	if s.SetXDS(nil); !allowed(s, other) || s.Local() != nil {
		t.Fatal("istiod withdrawing its authorizations left them enforced")
	}
}

package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ambient-agent/ambient-agent/tests/leak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// fakeADS is a delta ADS server on 127.0.0.1: the generated go-control-plane service with one stream handler
// that hands each stream to the test.
type fakeADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	addr    string
	srv     *grpc.Server
	streams chan *fakeStream
}

// fakeStream is one client stream as the server sees it.
type fakeStream struct {
	md    metadata.MD
	peer  *peer.Peer
	reqs  chan *discoveryv3.DeltaDiscoveryRequest
	resps chan *discoveryv3.DeltaDiscoveryResponse
	end   chan error // the handler returns this error, ending the stream
}

func startADS(t *testing.T, opts ...grpc.ServerOption) *fakeADS {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeADS{addr: l.Addr().String(), srv: grpc.NewServer(opts...), streams: make(chan *fakeStream, 8)}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.srv, f)
	go f.srv.Serve(l)
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeADS) DeltaAggregatedResources(s grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	p, _ := peer.FromContext(s.Context())
	fs := &fakeStream{md: md, peer: p, reqs: make(chan *discoveryv3.DeltaDiscoveryRequest, 64),
		resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 64), end: make(chan error, 1)}
	f.streams <- fs
	go func() {
		defer close(fs.reqs)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			fs.reqs <- r
		}
	}()
	for {
		select {
		case r := <-fs.resps:
			if err := s.Send(r); err != nil {
				return err
			}
		case err := <-fs.end:
			return err
		case <-s.Context().Done():
			return nil
		}
	}
}

func (f *fakeADS) nextStream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no stream from the client")
		return nil
	}
}

func (s *fakeStream) next(t *testing.T) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case r, ok := <-s.reqs:
		if !ok {
			t.Fatal("stream closed")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request from the client")
		return nil
	}
}

// subscriptions reads the two initial requests and returns them by type.
func (s *fakeStream) subscriptions(t *testing.T) map[string]*discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	out := map[string]*discoveryv3.DeltaDiscoveryRequest{}
	for range 2 {
		r := s.next(t)
		out[r.TypeUrl] = r
	}
	if out[AddressType] == nil || out[AuthorizationType] == nil {
		t.Fatalf("subscriptions: %v", out)
	}
	return out
}

// send pushes a response and returns the client's answer to it.
func (s *fakeStream) send(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	s.resps <- r
	ack := s.next(t)
	if ack.ResponseNonce != r.Nonce || ack.TypeUrl != r.TypeUrl {
		t.Fatalf("answer to %s nonce %s: %v", r.TypeUrl, r.Nonce, ack)
	}
	return ack
}

// runClient starts a client against f and stops it at cleanup, checking that Run returned nil.
func runClient(t *testing.T, o Options) *Client {
	t.Helper()
	if o.NodeName == "" {
		o.NodeName, o.Namespace = "vm-1", "vms"
	}
	o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func waitChanged(t *testing.T, c *Client) Update {
	t.Helper()
	select {
	case <-c.Changed():
		return c.Current()
	case <-time.After(10 * time.Second):
		t.Fatal("no change")
		return Update{}
	}
}

func noChange(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Changed():
		t.Fatalf("unexpected change: %s", jsonOf(c.Current()))
	case <-time.After(100 * time.Millisecond):
	}
}

func uids(u Update) []string {
	var out []string
	for _, w := range u.Workloads() {
		out = append(out, w.UID)
	}
	return out
}

// The client subscribes as a ztunnel, publishes a view once both types have answered, ACKs with the nonce,
// and applies updates and removals.
func TestClientSubscribesAcksAndApplies(t *testing.T) {
	f := startADS(t)
	c := runClient(t, Options{Address: f.addr, Plaintext: true, ClusterID: "c1", Network: "net1"})
	s := f.nextStream(t)
	subs := s.subscriptions(t)
	for typ, r := range subs {
		if !slices.Equal(r.ResourceNamesSubscribe, []string{"*"}) || len(r.InitialResourceVersions) != 0 || r.ResponseNonce != "" {
			t.Fatalf("%s: initial request %v", typ, r)
		}
	}
	node := subs[AddressType].Node
	if node.Id != "ztunnel~1.1.1.1~vm-1.vms~vms.svc.cluster.local" {
		t.Fatalf("node id %q", node.Id)
	}
	md := node.Metadata.AsMap()
	for k, v := range map[string]string{"NAME": "vm-1", "NAMESPACE": "vms", "NODE_NAME": "vm-1", "CLUSTER_ID": "c1",
		"NETWORK": "net1", "INSTANCE_IPS": "1.1.1.1"} {
		if md[k] != v {
			t.Errorf("node metadata %s = %v, want %q", k, md[k], v)
		}
	}
	if len(s.md.Get("authorization")) != 0 {
		t.Fatal("a token sent without Options.Token")
	}

	ack := s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n1", Resources: []*discoveryv3.Resource{
		addrRes("w1", "v1", basicWorkload("w1", "ns", "a", "10.0.0.1", "ns/svc.ns.svc.cluster.local")),
		addrRes("ns/svc.ns.svc.cluster.local", "v1", serviceAddr(fStr(svcName, "svc"), fStr(svcNamespace, "ns"),
			fStr(svcHostname, "svc.ns.svc.cluster.local"), networkAddr(svcAddresses, "net1", "10.96.0.1"), portMsg(svcPorts, 80, 8080, 0))),
	}})
	if ack.ErrorDetail != nil {
		t.Fatalf("NACK: %v", ack.ErrorDetail)
	}
	if c.Connected() || len(c.Current().Workloads()) != 0 {
		t.Fatal("a view published before istiod answered both subscriptions")
	}
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "n2", Resources: []*discoveryv3.Resource{
		authzRes("ns/allow", "", allowFrom("ns", "allow", "cluster.local/ns/ns/sa/b")),
	}})
	u := waitChanged(t, c)
	if !c.Connected() || !slices.Equal(uids(u), []string{"w1"}) || len(u.Services) != 1 || len(u.Policies) != 1 {
		t.Fatalf("view: %s", jsonOf(u))
	}
	if d := u.Services[0]; !slices.Equal(d.Workloads, []string{"w1"}) || d.VIPs[0].String() != "10.96.0.1" {
		t.Fatalf("service: %+v", d)
	}

	// An update, then a removal.
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n3", Resources: []*discoveryv3.Resource{
		addrRes("w2", "v1", basicWorkload("w2", "ns", "b", "10.0.0.2")),
	}})
	if u := waitChanged(t, c); !slices.Equal(uids(u), []string{"w1", "w2"}) {
		t.Fatalf("after adding w2: %v", uids(u))
	}
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n4", RemovedResources: []string{"w1"}})
	if u := waitChanged(t, c); !slices.Equal(uids(u), []string{"w2"}) || len(u.Services[0].Workloads) != 0 {
		t.Fatalf("after removing w1: %s", jsonOf(u))
	}
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "n5", RemovedResources: []string{"ns/allow"}})
	if u := waitChanged(t, c); len(u.Policies) != 0 {
		t.Fatalf("after removing the policy: %v", u.Policies)
	}
	// Removing what is not there changes nothing, and is ACKed.
	if ack := s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n6", RemovedResources: []string{"nope"}}); ack.ErrorDetail != nil {
		t.Fatalf("NACK: %v", ack.ErrorDetail)
	}
	noChange(t, c)
}

// A corrupt resource is NACKed with its name and reason; the view keeps its previous version; the other
// resources of the response are taken; a later good version is taken.
func TestClientNacksCorruptResource(t *testing.T) {
	f := startADS(t)
	c := runClient(t, Options{Address: f.addr, Plaintext: true})
	s := f.nextStream(t)
	s.subscriptions(t)
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n1", Resources: []*discoveryv3.Resource{
		addrRes("w1", "v1", basicWorkload("w1", "ns", "a", "10.0.0.1")),
	}})
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "n2"})
	before := waitChanged(t, c)

	ack := s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n3", Resources: []*discoveryv3.Resource{
		addrRes("w1", "v2", []byte{0x0a, 0xff, 0x01}), // truncated
	}})
	if ack.ErrorDetail == nil || ack.ErrorDetail.Code != int32(codes.InvalidArgument) ||
		!strings.HasPrefix(ack.ErrorDetail.Message, "w1: workload") && !strings.HasPrefix(ack.ErrorDetail.Message, "w1: field") {
		t.Fatalf("answer to a corrupt resource: %v", ack)
	}
	noChange(t, c)
	if got := c.Current(); !slices.Equal(uids(got), uids(before)) || got.Workloads()[0] != before.Workloads()[0] {
		t.Fatalf("view changed: %s", jsonOf(got))
	}

	// Bad and good together: the good one is taken, the bad one named.
	ack = s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "n4", Resources: []*discoveryv3.Resource{
		authzRes("ns/bad", "", cat(fStr(authzName, "bad"), fStr(authzNamespace, "ns"), fUint(authzAction, 9))),
		authzRes("ns/good", "", allowFrom("ns", "good", "x")),
		{Name: "ns/empty"},
		res(AddressType, "ns/wrong-type", "", allowFrom("ns", "w", "x")),
	}})
	want := "ns/bad: authorization: field 4: unknown action 9; ns/empty: no payload; ns/wrong-type: payload of type"
	if ack.ErrorDetail == nil || !strings.HasPrefix(ack.ErrorDetail.Message, want) {
		t.Fatalf("NACK %v, want %q", ack.ErrorDetail, want)
	}
	if u := waitChanged(t, c); len(u.Policies) != 1 || u.Policies[0].Name != "good" {
		t.Fatalf("policies: %v", u.Policies)
	}

	ack = s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n5", Resources: []*discoveryv3.Resource{
		addrRes("w1", "v3", basicWorkload("w1", "ns", "a", "10.0.0.7")),
	}})
	if ack.ErrorDetail != nil {
		t.Fatalf("NACK: %v", ack.ErrorDetail)
	}
	if u := waitChanged(t, c); u.Workloads()[0].Addresses[0].String() != "10.0.0.7" {
		t.Fatalf("after a good version: %s", jsonOf(u))
	}
}

// After the stream breaks, the client reconnects and resumes: initial_resource_versions hold the versions it
// took (not those it refused), and the view it had stays until istiod says otherwise.
func TestClientResumesWithInitialResourceVersions(t *testing.T) {
	f := startADS(t)
	c := runClient(t, Options{Address: f.addr, Plaintext: true})
	s := f.nextStream(t)
	s.subscriptions(t)
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n1", Resources: []*discoveryv3.Resource{
		addrRes("w1", "v1", basicWorkload("w1", "ns", "a", "10.0.0.1")),
		addrRes("w2", "v1", basicWorkload("w2", "ns", "b", "10.0.0.2")),
	}})
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "n2", Resources: []*discoveryv3.Resource{
		authzRes("ns/p", "", allowFrom("ns", "p", "x")),
	}})
	waitChanged(t, c)
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "n3", Resources: []*discoveryv3.Resource{
		addrRes("w2", "v2", []byte{0xff}), // refused: w2 stays at v1
	}})

	up := c.Status()
	if !up.Connected || up.Addresses != 2 || up.Policies != 1 || up.Rejected != 1 || up.LastResponse.IsZero() || up.Since.IsZero() {
		t.Fatalf("status while connected: %+v", up)
	}
	s.end <- status.Error(codes.Unavailable, "istiod restarting")
	s2 := f.nextStream(t)
	subs := s2.subscriptions(t)
	down := c.Status()
	if down.Connected || !strings.Contains(down.LastError, "istiod restarting") || !down.Since.After(up.Since) || down.Addresses != 2 {
		t.Fatalf("status once the stream ended: %+v (before: %+v)", down, up)
	}
	if got := subs[AddressType].InitialResourceVersions; len(got) != 2 || got["w1"] != "v1" || got["w2"] != "v1" {
		t.Fatalf("address initial_resource_versions %v", got)
	}
	if got := subs[AuthorizationType].InitialResourceVersions; len(got) != 1 || got["ns/p"] != "" {
		t.Fatalf("authorization initial_resource_versions %v", got)
	}
	if !slices.Equal(subs[AddressType].ResourceNamesSubscribe, []string{"*"}) || subs[AddressType].Node == nil {
		t.Fatalf("resubscription %v", subs[AddressType])
	}
	if c.Connected() {
		t.Fatal("connected before istiod answered the new stream")
	}
	if got := c.Current(); !slices.Equal(uids(got), []string{"w1", "w2"}) {
		t.Fatalf("view lost across the reconnection: %v", uids(got))
	}
	// istiod answers with what changed: w1 is gone, w2 unchanged (not re-sent).
	s2.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "m1", RemovedResources: []string{"w1"}})
	if u := waitChanged(t, c); !slices.Equal(uids(u), []string{"w2"}) {
		t.Fatalf("after resuming: %v", uids(u))
	}
	s2.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "m2", Resources: []*discoveryv3.Resource{
		authzRes("ns/p", "", allowFrom("ns", "p", "x")),
	}})
	waitChanged(t, c)
	if !c.Connected() {
		t.Fatal("not connected after both answers")
	}
	if again := c.Status(); !again.Connected || !again.Since.After(down.Since) || again.Addresses != 1 {
		t.Fatalf("status once connected again: %+v", again)
	}
}

// A server that is down at first is retried with backoff.
func TestClientRetriesUntilServerIsUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := runClient(t, Options{Address: addr, Plaintext: true})
	time.Sleep(700 * time.Millisecond) // at least one failed attempt
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s taken meanwhile: %v", addr, err)
	}
	f := &fakeADS{addr: addr, srv: grpc.NewServer(), streams: make(chan *fakeStream, 8)}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.srv, f)
	go f.srv.Serve(l)
	t.Cleanup(f.srv.Stop)
	s := f.nextStream(t)
	s.subscriptions(t)
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "1"})
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "2"})
	waitChanged(t, c)
	if !c.Connected() {
		t.Fatal("not connected")
	}
}

// TLS: the client verifies istiod against the root certificate file and server name, presents the client
// certificate it is given, and sends the bearer token and cluster id.
func TestClientTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "root.pem"), ca.Raw)
	serverCert := issue(t, ca, caKey, "istiod.istio-system.svc", false)
	clientCert := issue(t, ca, caKey, "", true)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	f := startADS(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})))

	c := runClient(t, Options{
		Address: f.addr, ServerName: "istiod.istio-system.svc", RootCert: filepath.Join(dir, "root.pem"), ClusterID: "c9",
		TLS:   func() (*tls.Config, error) { return &tls.Config{Certificates: []tls.Certificate{clientCert}}, nil },
		Token: func() (string, error) { return "tok123", nil },
	})
	s := f.nextStream(t)
	if got := s.md.Get("authorization"); !slices.Equal(got, []string{"Bearer tok123"}) {
		t.Fatalf("authorization metadata %v", got)
	}
	if got := s.md.Get("clusterid"); !slices.Equal(got, []string{"c9"}) {
		t.Fatalf("clusterid metadata %v", got)
	}
	info, ok := s.peer.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || info.State.PeerCertificates[0].URIs[0].String() != "spiffe://cluster.local/ns/vms/sa/vm" {
		t.Fatalf("client certificate not presented: %+v", s.peer.AuthInfo)
	}
	s.subscriptions(t)
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "1"})
	s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AuthorizationType, Nonce: "2"})
	waitChanged(t, c)
}

// A client that does not trust istiod's certificate never gets a stream.
func TestClientRefusesUntrustedServer(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	other, _ := newCA(t)
	writePEM(t, filepath.Join(dir, "root.pem"), other.Raw)
	f := startADS(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{issue(t, ca, caKey, "istiod.istio-system.svc", false)}})))
	runClient(t, Options{Address: f.addr, ServerName: "istiod.istio-system.svc", RootCert: filepath.Join(dir, "root.pem")})
	select {
	case <-f.streams:
		t.Fatal("a stream with an untrusted server")
	case <-time.After(1500 * time.Millisecond):
	}
}

// Run returns when its context ends, leaving no goroutine behind (the client's or gRPC's).
func TestRunLeavesNoGoroutines(t *testing.T) {
	noLeaks := leak.Check(t, leak.Options{NoFDs: true, Within: 5 * time.Second})
	func() {
		f := &fakeADS{streams: make(chan *fakeStream, 8), srv: grpc.NewServer()}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.addr = l.Addr().String()
		discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.srv, f)
		go f.srv.Serve(l)
		defer f.srv.Stop()
		c, err := New(Options{Address: f.addr, Plaintext: true, NodeName: "n", Namespace: "ns"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		s := f.nextStream(t)
		s.subscriptions(t)
		s.send(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: AddressType, Nonce: "1"})
		s.end <- status.Error(codes.Unavailable, "bye") // and one reconnection
		s = f.nextStream(t)
		s.subscriptions(t)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := c.Run(context.Background()); err == nil {
			t.Fatal("Run ran twice")
		}
	}()
	noLeaks()
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "no address"},
		{Options{Address: "istiod"}, "missing port"},
		{Options{Address: "istiod:15012"}, "node name and a namespace"},
		{Options{Address: "istiod:15012", NodeID: "sidecar~1.2.3.4~a.b~b.svc.cluster.local"}, "is not ztunnel~"},
		{Options{Address: "istiod:15012", NodeID: "ztunnel~x~a.b~b.svc.cluster.local"}, "ParseAddr"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	if _, err := New(Options{Address: "istiod:15012", NodeID: NodeIDFor(netip.MustParseAddr("10.1.2.3"), "h", "ns")}); err != nil {
		t.Fatal(err)
	}
}

// Certificates for the TLS tests.

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"test mesh"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, dns string, client bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	if client {
		u, _ := url.Parse("spiffe://cluster.local/ns/vms/sa/vm")
		tmpl.URIs = append(tmpl.URIs, u)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
)

// maxMessage bounds one response, as ztunnel does (200 MiB): a large cluster's first push is big.
const maxMessage = 200 << 20

// keepalives detect a dead istiod (or path to it) on an otherwise idle stream. istiod permits pings every 15 s.
var keepalives = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// subscriptions are the types the client asks for, in the order ztunnel asks.
var subscriptions = []string{AddressType, AuthorizationType}

// subscriptions are the types the client subscribes to: both, or the addresses alone for a registration.
func (c *Client) subscriptions() []string {
	if c.opts.Registration != nil {
		return subscriptions[:1]
	}
	return subscriptions
}

// deltaADS is the delta ADS method of envoy's AggregatedDiscoveryService, opened with plain gRPC: the messages
// are encoded here (envelope.go), not by generated code.
var deltaADS = &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}

const deltaADSMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// session runs one stream: it subscribes (wildcard, with the versions it holds), then applies each response
// and answers it with an ACK, or a NACK naming the resources it refused. It returns when the stream fails or
// ctx is done; progressed says whether istiod answered at all (for the backoff).
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	conn, err := c.dial()
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream's goroutines before the connection closes
	if ctx, err = c.withToken(ctx); err != nil {
		return false, err
	}
	stream, err := conn.NewStream(ctx, deltaADS, deltaADSMethod, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return false, fmt.Errorf("xds: %s: %w", c.opts.Address, err)
	}
	if err := c.subscribe(stream); err != nil {
		return false, err
	}
	waiting := map[string]bool{}
	for _, t := range c.subscriptions() {
		waiting[t] = true
	}
	for {
		resp, err := c.receive(stream)
		if err != nil {
			return progressed, err
		}
		progressed = true
		if err := c.handle(stream, resp, waiting); err != nil {
			return progressed, err
		}
	}
}

// dial makes the gRPC client connection to istiod.
func (c *Client) dial() (*grpc.ClientConn, error) {
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithKeepaliveParams(keepalives),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)), grpc.WithUserAgent("ambient-agent")}
	if c.opts.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(c.opts.Dial))
	}
	conn, err := grpc.NewClient(c.opts.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("xds: %s: %w", c.opts.Address, err)
	}
	return conn, nil
}

// subscribe asks for every resource of each type, resuming from the versions
// held.
func (c *Client) subscribe(stream grpc.ClientStream) error {
	node, err := c.opts.node()
	if err != nil {
		return fmt.Errorf("xds: node metadata: %w", err)
	}
	for _, t := range c.subscriptions() {
		req := &deltaRequest{
			node:            node,
			typeURL:         t,
			subscribe:       []string{"*"},
			initialVersions: c.store.initialVersions(t),
		}
		if r := c.opts.Registration; r != nil { // the workload's own addresses only: "<network>/<ip>"
			req.subscribe = make([]string, len(r.Addresses))
			for i, a := range r.Addresses {
				req.subscribe[i] = c.opts.Network + "/" + a.String()
			}
		}
		if err := send(stream, req); err != nil {
			return fmt.Errorf("xds: %s: subscribe: %w", c.opts.Address, recvError(stream, err))
		}
		c.log.Debug("xds: subscribed", "type", t, "resuming", len(req.initialVersions))
	}
	return nil
}

// receive reads the next response. A malformed one ends the stream, as a
// generated decoder would, and the client reconnects.
func (c *Client) receive(stream grpc.ClientStream) (*deltaResponse, error) {
	var raw []byte
	if err := stream.RecvMsg(&raw); err != nil {
		return nil, fmt.Errorf("xds: %s: %w", c.opts.Address, err)
	}
	resp, err := decodeDeltaResponse(raw)
	if err != nil {
		return nil, fmt.Errorf("xds: %s: malformed response: %w", c.opts.Address, err)
	}
	return resp, nil
}

// handle applies a response, publishes what changed once every type has
// arrived, and answers it: ACK, or NACK naming the resources it refused.
func (c *Client) handle(stream grpc.ClientStream, resp *deltaResponse, waiting map[string]bool) error {
	c.metrics.received(resp, c.store.versions[resp.typeURL] != nil)
	changed, rejected := c.store.apply(resp)
	c.status.update(func(s *Status) {
		s.LastResponse = time.Now()
		s.Addresses, s.Policies = len(c.store.addresses), len(c.store.policies)
		s.Rejected += len(rejected)
	})
	c.log.Debug("xds: response", "type", resp.typeURL, "resources", len(resp.resources),
		"removed", len(resp.removed), "rejected", len(rejected), "nonce", resp.nonce)
	delete(waiting, resp.typeURL)
	if len(waiting) == 0 && !c.connected.Load() {
		c.markConnected()
	}
	if (changed && c.synced) || (!c.synced && len(waiting) == 0) {
		c.synced = true
		c.publish()
	}
	if err := send(stream, c.answer(resp, rejected)); err != nil {
		return fmt.Errorf("xds: %s: ack: %w", c.opts.Address, recvError(stream, err))
	}
	return nil
}

// markConnected records that istiod has sent every type once.
func (c *Client) markConnected() {
	c.connected.Store(true)
	c.status.update(func(s *Status) { s.Connected, s.Since = true, time.Now() })
	if r := c.opts.Registration; r != nil {
		c.log.Info("xds: registered with istiod", "address", c.opts.Address, "workloadGroup", c.opts.Namespace+"/"+r.Group,
			"addresses", r.Addresses, "known", len(c.store.addresses) > 0)
		return
	}
	c.log.Info("xds: connected to istiod", "address", c.opts.Address, "resources", len(c.store.addresses),
		"policies", len(c.store.policies))
}

// answer is the ACK of resp, or its NACK when resources were refused.
func (c *Client) answer(resp *deltaResponse, rejected []rejection) *deltaRequest {
	ack := &deltaRequest{typeURL: resp.typeURL, responseNonce: resp.nonce}
	if len(rejected) > 0 {
		detail := rejectionDetail(rejected)
		ack.errorDetail = &rpcStatus{code: int32(codes.InvalidArgument), message: detail}
		c.log.Warn("xds: rejected resources from istiod (NACK)", "type", resp.typeURL, "nonce", resp.nonce,
			"error", detail)
	}
	return ack
}

func send(stream grpc.ClientStream, req *deltaRequest) error {
	b := req.marshal()
	return stream.SendMsg(&b)
}

// recvError turns a failed Send into the stream's real error: gRPC reports io.EOF on Send and the status on
// the next Recv.
func recvError(stream grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		var raw []byte
		if rerr := stream.RecvMsg(&raw); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
}

// credentials builds the transport security of a new connection: plaintext, or TLS that verifies istiod
// (root certificates read again each time, so a rotated file is picked up) with the caller's client
// certificate, if any.
func (c *Client) credentials() (credentials.TransportCredentials, error) {
	if c.opts.Plaintext {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{}
	if c.opts.TLS != nil {
		base, err := c.opts.TLS()
		if err != nil {
			return nil, fmt.Errorf("xds: client certificate: %w", err)
		}
		if base != nil {
			cfg = base.Clone()
		}
	}
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	cfg.ServerName = c.opts.ServerName
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(c.opts.Address)
		cfg.ServerName = host
	}
	if c.opts.RootCert != "" {
		pem, err := os.ReadFile(c.opts.RootCert)
		if err != nil {
			return nil, fmt.Errorf("xds: root certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("xds: root certificate %s: no PEM certificate in it", c.opts.RootCert)
		}
		cfg.RootCAs = pool
	}
	return credentials.NewTLS(cfg), nil
}

// withToken adds the bearer token (and the cluster id istiod needs to verify it in a multicluster mesh) as
// ztunnel does (src/identity/auth.rs).
func (c *Client) withToken(ctx context.Context) (context.Context, error) {
	if c.opts.Token == nil {
		return ctx, nil
	}
	tok, err := c.opts.Token()
	if err != nil {
		return nil, fmt.Errorf("xds: token: %w", err)
	}
	if tok == "" {
		return ctx, nil
	}
	clusterID := c.opts.ClusterID
	if clusterID == "" {
		clusterID = DefaultClusterID
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok, "clusterid", clusterID), nil
}

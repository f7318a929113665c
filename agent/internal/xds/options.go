package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Client.
type Options struct {
	// Address is istiod's (or an east-west gateway's) discovery address, host:port; port 15012 in a mesh.
	Address string
	// ServerName is the name istiod's certificate must carry (istiod.istio-system.svc); "" uses Address's host.
	ServerName string
	// RootCert is the PEM file of the mesh's root certificate(s) that istiod's certificate chains to; "" uses
	// the system roots.
	RootCert string
	// Plaintext talks gRPC without TLS (tests, and istiod's plaintext port 15010 on a trusted network).
	Plaintext bool

	// NodeID is the xDS node id; "" builds ztunnel's: ztunnel~<ip>~<NodeName>.<Namespace>~<Namespace>.svc.cluster.local
	// (NodeIDFor). istiod reads the proxy type (ztunnel) and an IP from it.
	NodeID string
	// ClusterID is the cluster the host joins (istiod's CLUSTER_ID node metadata; "Kubernetes" by default in
	// Istio). Sent with a token too, as the clusterid header.
	ClusterID string
	// Network is the host's network: services' VIPs and workloads of other networks are left out.
	Network string
	// Namespace is the namespace of the identity the client presents (certificate or token): istiod checks
	// that they agree.
	Namespace string
	// NodeName is the host's name (NAME and NODE_NAME node metadata).
	NodeName string

	// TLS returns the client's TLS configuration for a new connection, with a client certificate; the
	// server-side checks (RootCert, ServerName) are added to it. nil: server authentication only.
	TLS func() (*tls.Config, error)
	// Token returns a bearer token sent as `authorization` metadata on each new stream; nil: none.
	Token func() (string, error)

	Log *slog.Logger
	// Dial, when set, opens the connection to istiod (the agent's marked dialer, so that capture never sends
	// the agent's own connection back into its outbound proxy); nil: gRPC's own dialer.
	Dial func(ctx context.Context, address string) (net.Conn, error)
	// Registerer, if set, gets istio_xds_connection_terminations_total, istio_xds_message_total and
	// istio_xds_message_bytes_total.
	Registerer prometheus.Registerer

	// Registration, when set, makes the client register one local workload instead of learning the mesh
	// (istiod's WorkloadEntry auto-registration): it presents the workload (its namespace, which must be
	// Namespace, service account, addresses, labels and WorkloadGroup) in the node metadata, authenticated as
	// the workload itself, and subscribes only to the workload's own addresses. istiod creates the WorkloadEntry
	// when the stream opens and deletes it a grace period after the last stream for it closes.
	Registration *Registration
}

// Registration is the workload a registration client presents (Options.Registration).
type Registration struct {
	Group          string // the WorkloadGroup, in Options.Namespace
	ServiceAccount string
	Addresses      []netip.Addr
	Labels         map[string]string
}

// tunnelLabel, "http", makes istiod give a WorkloadEntry the HBONE tunnel protocol: peers send HBONE to its
// address on port 15008, where this host's agent answers. istiod sets it on the entries a ztunnel registers.
const tunnelLabel = "networking.istio.io/tunnel"

// Type URLs of the resources a ztunnel subscribes to (ztunnel src/xds/types.rs; istio pilot/pkg/model).
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// DefaultClusterID is Istio's cluster id when none is configured.
const DefaultClusterID = "Kubernetes"

// defaultNodeIP is what ztunnel puts in its node id without INSTANCE_IP: istiod needs a valid IP there but
// does not use it for a ztunnel.
var defaultNodeIP = netip.AddrFrom4([4]byte{1, 1, 1, 1})

// NodeIDFor builds a ztunnel node id, the form istiod parses (pilot/pkg/model ParseServiceNodeWithMetadata:
// type~ip~id~dns-domain) and ztunnel sends (src/xds/client.rs, Config::node).
func NodeIDFor(ip netip.Addr, name, namespace string) string {
	if !ip.IsValid() {
		ip = defaultNodeIP
	}
	return fmt.Sprintf("ztunnel~%s~%s.%s~%s.svc.cluster.local", ip, name, namespace, namespace)
}

func (o *Options) validate() error {
	if o.Address == "" {
		return errors.New("xds: no address")
	}
	if _, _, err := net.SplitHostPort(o.Address); err != nil {
		return fmt.Errorf("xds: address %q: %w", o.Address, err)
	}
	if o.NodeID == "" && (o.NodeName == "" || o.Namespace == "") {
		return errors.New("xds: a node name and a namespace are needed to build the node id")
	}
	if r := o.Registration; r != nil && (r.Group == "" || r.ServiceAccount == "" || len(r.Addresses) == 0) {
		return errors.New("xds: a registration needs a WorkloadGroup, a service account and an address")
	}
	if o.NodeID != "" {
		if parts := strings.Split(o.NodeID, "~"); len(parts) != 4 || parts[0] != "ztunnel" {
			return fmt.Errorf("xds: node id %q is not ztunnel~<ip>~<name>.<namespace>~<domain>", o.NodeID)
		} else if _, err := netip.ParseAddr(parts[1]); err != nil {
			return fmt.Errorf("xds: node id %q: %w", o.NodeID, err)
		}
	}
	return nil
}

// node is the xDS node the client presents: a ztunnel, with the metadata istiod reads from one
// (pilot/pkg/model NodeMetadata: NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME, CLUSTER_ID, NETWORK).
func (o *Options) node() (*node, error) {
	id := o.NodeID
	if id == "" {
		id = NodeIDFor(netip.Addr{}, o.NodeName, o.Namespace)
	}
	ip := strings.Split(id, "~")[1]
	clusterID := o.ClusterID
	if clusterID == "" {
		clusterID = DefaultClusterID
	}
	md := map[string]string{
		"NAME":         o.NodeName,
		"NAMESPACE":    o.Namespace,
		"INSTANCE_IPS": ip,
		"NODE_NAME":    o.NodeName,
		"CLUSTER_ID":   clusterID,
	}
	if o.Network != "" {
		md["NETWORK"] = o.Network
	}
	var labels map[string]string
	if r := o.Registration; r != nil {
		ips := make([]string, len(r.Addresses))
		for i, a := range r.Addresses {
			ips[i] = a.String()
		}
		md["INSTANCE_IPS"], md["SERVICE_ACCOUNT"], md["AUTO_REGISTER_GROUP"] = strings.Join(ips, ","), r.ServiceAccount, r.Group
		labels = maps.Clone(r.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[tunnelLabel] = "http"
	}
	if !utf8.ValidString(id) {
		return nil, fmt.Errorf("node id %q: invalid UTF-8", id)
	}
	for _, m := range []map[string]string{md, labels} {
		for k, v := range m {
			if !utf8.ValidString(k) || !utf8.ValidString(v) { // protobuf strings must be UTF-8: istiod would refuse the request
				return nil, fmt.Errorf("%s %q: invalid UTF-8", k, v)
			}
		}
	}
	return &node{id: id, metadata: md, labels: labels, userAgentName: "ambient-agent"}, nil
}

package xds

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	istioapi "istio.io/api/networking/v1alpha3"
	"istio.io/api/security/v1beta1"
	networkingclient "istio.io/client-go/pkg/apis/networking/v1"
	"istio.io/istio/pilot/pkg/autoregistration"
	"istio.io/istio/pilot/pkg/config/kube/crdclient"
	istioxds "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/gvk"
	"istio.io/istio/pkg/config/schema/gvr"
	"istio.io/istio/pkg/keepalive"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	"istio.io/istio/pkg/security"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ambient-agent/ambient-agent/tests/lab"
)

// cluster is a Kubernetes cluster's service-account token signer, as istiod's JWT authenticator checks it.
type cluster struct {
	key  *rsa.PrivateKey
	jwks string
}

const tokenIssuer = "https://kubernetes.default.svc.cluster.local"

func newCluster(t *testing.T) *cluster {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "cluster",
			"n": b64(key.PublicKey.N.Bytes()), "e": b64(big.NewInt(int64(key.PublicKey.E)).Bytes())}}})
	}))
	t.Cleanup(srv.Close)
	return &cluster{key: key, jwks: srv.URL}
}

// token is what `istioctl x workload entry configure` asks the cluster for: ns/sa's token, audience istio-ca, an hour.
func (c *cluster) token(t *testing.T, ns, sa string) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "cluster"})
	claims, _ := json.Marshal(map[string]any{"iss": tokenIssuer, "sub": "system:serviceaccount:" + ns + ":" + sa,
		"aud": []string{"istio-ca"}, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	signed := b64(header) + "." + b64(claims)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(sig)
}

func (c *cluster) authenticator(t *testing.T) security.Authenticator {
	t.Helper()
	a, err := authenticate.NewJwtAuthenticator(&v1beta1.JWTRule{Issuer: tokenIssuer, JwksUri: c.jwks, Audiences: []string{"istio-ca"}},
		staticMesh{&meshconfig.MeshConfig{TrustDomain: "cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type staticMesh struct{ cfg *meshconfig.MeshConfig }

func (m staticMesh) Mesh() *meshconfig.MeshConfig { return m.cfg }
func (staticMesh) AddMeshHandler(func()) *mesh.WatcherHandlerRegistration {
	return mesh.NewWatcherHandlerRegistration(func() {})
}
func (staticMesh) DeleteMeshHandler(*mesh.WatcherHandlerRegistration) {}

// vmFiles writes, for WorkloadGroup vms/<name> of service account <name> at ip, the files istioctl x workload
// entry configure --autoregister --internalIP <ip> writes (the format tests/interop/vm checks against Istio's
// goldens), istiod at istiodIP.
func vmFiles(t *testing.T, c *cluster, m *meshCA, name, ip, istiodIP string) string {
	t.Helper()
	dir := t.TempDir()
	q := func(s string) string { return "'" + s + "'" }
	env := []string{
		"CANONICAL_REVISION=" + q("latest"), "CANONICAL_SERVICE=" + q(name), "ISTIO_INBOUND_PORTS=" + q("*"),
		"ISTIO_LOCAL_EXCLUDE_PORTS=" + q("22,15090,15021,15020"),
		"ISTIO_METAJSON_LABELS=" + q(`{"app":"`+name+`","service.istio.io/canonical-name":"`+name+`","service.istio.io/canonical-revision":"latest"}`),
		"ISTIO_META_AUTO_REGISTER_GROUP=" + q(name), "ISTIO_META_CLUSTER_ID=" + q("Kubernetes"), "ISTIO_META_DNS_CAPTURE=" + q("true"),
		"ISTIO_META_MESH_ID=" + q(""), "ISTIO_META_NETWORK=" + q(""), "ISTIO_META_WORKLOAD_NAME=" + q(name),
		"ISTIO_NAMESPACE=" + q("vms"), "ISTIO_SERVICE=" + q(name+".vms"), "ISTIO_SERVICE_CIDR=" + q("*"), "ISTIO_SVC_IP=" + q(ip),
		"POD_NAMESPACE=" + q("vms"), "SERVICE_ACCOUNT=" + q(name), "TRUST_DOMAIN=" + q("cluster.local"),
	}
	files := map[string]string{
		"cluster.env":   strings.Join(env, "\n") + "\n",
		"mesh.yaml":     "defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n",
		"root-cert.pem": string(m.rootPEM),
		"istio-token":   c.token(t, "vms", name),
		"hosts":         istiodIP + " istiod.istio-system.svc\n",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o744); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestJoinFromIstioctlFiles: two hosts join a cluster from nothing but istioctl's files for their WorkloadGroups.
// istiod (its discovery server, its CA server and its auto-registration controller, over TLS with its client
// certificate and JWT authenticators) runs in h1. `ambient-agent join istio` configures h2 (web) and h3 (sleep);
// their agents get certificates from istiod's CA with the tokens, connect to discovery, and istiod registers both
// WorkloadEntries; sleep then reaches web over HBONE, each with the identity istiod issued.
func TestJoinFromIstioctlFiles(t *testing.T) {
	lab.Require(t, "nginx", "curl")
	l := lab.New(t, 3)
	istiodHost, web, sleep := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	group := func(name string) *networkingclient.WorkloadGroup {
		return &networkingclient.WorkloadGroup{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "vms"},
			Spec: istioapi.WorkloadGroup{Metadata: &istioapi.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": name}},
				Template: &istioapi.WorkloadEntry{ServiceAccount: name}}}
	}
	s := istioxds.NewFakeDiscoveryServer(t, istioxds.FakeOptions{
		KubernetesObjects: []runtime.Object{namespace("vms"), group("web"), group("sleep")},
	})
	// As istiod: the auto-registration controller reads WorkloadGroups from and writes WorkloadEntries to the
	// cluster's API server (the fake's own controller uses its in-memory store, which its ambient index does not
	// read), so that the entries become workloads istiod sends.
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, r := range []schema.GroupVersionResource{gvr.WorkloadGroup, gvr.WorkloadEntry} {
		clienttest.MakeCRD(t, s.KubeClient(), r)
	}
	store := crdclient.New(s.KubeClient(), crdclient.Option{DomainSuffix: "cluster.local", Identifier: "join-test"})
	go store.Run(stop)
	s.KubeClient().RunAndWait(stop)
	kubelib.WaitForCacheSync("join-test", stop, store.HasSynced)
	ctrl := autoregistration.NewController(store, "join-test", keepalive.Infinity)
	go ctrl.Run(stop)
	s.Discovery.WorkloadEntryController = ctrl
	c, m := newCluster(t), newMeshCA(t)
	authn := []security.Authenticator{c.authenticator(t)}
	ca, err := caserver.New(m.ca, 24*time.Hour, append([]security.Authenticator{&authenticate.ClientCertAuthenticator{}}, authn...), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := istiodHost.Listen("tcp", istiodHost.Addr.String()+":15012")
	if err != nil {
		t.Fatal(err)
	}
	m.serve(t, s, ln, authn, ca)

	web.StartNginx("hello from web", 8080)
	agents := map[*lab.Host]*lab.Agent{}
	for _, h := range []*lab.Host{web, sleep} {
		name := map[*lab.Host]string{web: "web", sleep: "sleep"}[h]
		from := vmFiles(t, c, m, name, h.Addr.String(), istiodHost.Addr.String())
		cfg := filepath.Join(h.Dir, "joined.toml")
		out, err := h.Run(lab.Timeout(30*time.Second), agentBinary, "join", "istio", "-from", from, "-node", h.Name,
			"-config", cfg, "-istio-dir", filepath.Join(h.Dir, "istio"))
		if err != nil {
			t.Fatalf("join istio on %s: %v\n%s", h.Name, err, out)
		}
		joined, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		agents[h] = h.StartAgent(agentBinary, string(joined)) // with the host's control socket
	}
	for _, a := range agents {
		a.WaitReady(t, 60*time.Second)
		// Ready requires the certificates; the identity source logs each one just after it reports them all.
		a.WaitLog(t, "received certificate from istiod", 10*time.Second)
	}
	entry := func(name string) bool { return store.Get(gvk.WorkloadEntry, name, "vms") != nil }
	for _, h := range []*lab.Host{web, sleep} {
		name := map[*lab.Host]string{web: "web", sleep: "sleep"}[h] + "-" + h.Addr.String()
		for deadline := time.Now().Add(30 * time.Second); !entry(name); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("istiod did not register %s:\n%s", name, agents[h].Log())
			}
		}
	}
	// sleep's agent learns web's registered entry from istiod; then sleep reaches web over HBONE.
	webEntry := "web-" + web.Addr.String()
	waitDump(t, agents[sleep], "web's registered WorkloadEntry", func(d agentDump) bool { return d.hasWorkload(webEntry) })
	url := fmt.Sprintf("http://%s:8080/", web.Addr)
	if out, err := sleep.Run(lab.Timeout(10*time.Second), "curl", "-sS", "--max-time", "5", url); err != nil || !strings.Contains(out, "hello from web") {
		t.Fatalf("sleep -> web: %v %q\n%s\n%s", err, out, agents[sleep].Log(), agents[web].Log())
	}
	agents[web].WaitLog(t, "src_identity=spiffe://cluster.local/ns/vms/sa/sleep", 5*time.Second)
	agents[sleep].WaitLog(t, "route=hbone", 5*time.Second)
	if strings.Contains(agents[web].Log(), "direction=inbound_plaintext") {
		t.Errorf("sleep reached web in plaintext:\n%s", agents[web].Log())
	}
}

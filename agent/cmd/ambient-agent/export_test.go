package main

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/export/*.yaml from the current output")

// exportConfig is the golden host: two workloads (one with two addresses, labels, a capacity and a waypoint in
// another namespace) and two services (one with a VIP, app_protocol http and a waypoint; one allocated, with a
// hostname of its own and two ports, backed by both workloads).
const exportConfig = "testdata/export/host.toml"

func exportKubernetes(t *testing.T, config string) string {
	t.Helper()
	code, out, errOut := run("export", "kubernetes", "-config", config)
	if code != 0 {
		t.Fatalf("export kubernetes -config %s: exit %d, stderr %q", config, code, errOut)
	}
	return out
}

func TestExportKubernetesGolden(t *testing.T) {
	out := exportKubernetes(t, exportConfig)
	golden := filepath.Join("testdata", "export", "host.yaml")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestExportKubernetesGolden -update to create it)", err)
	}
	if out != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended):\n%s", golden, out)
	}
	if again := exportKubernetes(t, exportConfig); again != out {
		t.Error("two exports of the same file differ")
	}
}

// parseDocuments splits a YAML stream at its "---" lines and decodes each document into generic maps, the way
// kubectl sees them; the comment-only header before the first "---" is returned apart.
func parseDocuments(t *testing.T, out string) (string, []map[string]any) {
	t.Helper()
	parts := strings.Split(out, "---\n")
	var docs []map[string]any
	for i, p := range parts[1:] {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(p), &m); err != nil {
			t.Fatalf("document %d does not parse: %v\n%s", i, err, p)
		}
		docs = append(docs, m)
	}
	return parts[0], docs
}

// field returns the value at a dotted path of a decoded document.
func field(t *testing.T, doc map[string]any, path string) any {
	t.Helper()
	var v any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: %q is not a map in %v", path, k, doc)
		}
		v = m[k]
	}
	return v
}

func TestExportKubernetesObjects(t *testing.T) {
	header, docs := parseDocuments(t, exportKubernetes(t, exportConfig))
	for _, line := range strings.Split(strings.TrimSpace(header), "\n") {
		if !strings.HasPrefix(line, "# ") {
			t.Errorf("header line %q is not a comment", line)
		}
	}
	if !strings.Contains(header, `host "vm-1"`) || !strings.Contains(header, exportConfig) {
		t.Errorf("header does not name the host and the file:\n%s", header)
	}
	if len(docs) != 4 {
		t.Fatalf("%d documents, want 2 WorkloadEntries then 2 ServiceEntries", len(docs))
	}
	var order []string
	for _, d := range docs {
		if got := field(t, d, "apiVersion"); got != "networking.istio.io/v1" {
			t.Errorf("apiVersion %v", got)
		}
		order = append(order, field(t, d, "kind").(string)+" "+field(t, d, "metadata.namespace").(string)+"/"+field(t, d, "metadata.name").(string))
	}
	wantOrder := []string{"WorkloadEntry shop/api", "WorkloadEntry shop/reviews-v1", "ServiceEntry shop/api", "ServiceEntry shop/reviews"}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Fatalf("objects %v, want %v", order, wantOrder)
	}
	api, reviews, apiSvc, reviewsSvc := docs[0], docs[1], docs[2], docs[3]

	// Numbers come back as float64 from the JSON the YAML is turned into.
	checks := []struct {
		doc  map[string]any
		path string
		want any
	}{
		{api, "spec.address", "10.0.0.13"},
		{api, "spec.serviceAccount", "api"},
		{api, "spec.network", "vm-net"},
		{api, "spec.weight", nil},
		{api, "spec.locality", nil},
		{api, "spec.ports", map[string]any{"https-443": 8443.0, "tcp-5432": 5432.0}},
		{api, "metadata.labels", map[string]any{
			"ambient-agent.io/node":        "vm-1",
			"app.kubernetes.io/managed-by": "ambient-agent",
			"networking.istio.io/tunnel":   "http",
			"service.ambient-agent.io/api": "true",
		}},
		{reviews, "spec.address", "10.0.0.12"}, // IPv4 preferred over the first address, fd00::12
		{reviews, "spec.serviceAccount", "reviews"},
		{reviews, "spec.weight", 3.0},
		{reviews, "spec.ports", map[string]any{"http-9080": 8080.0, "https-443": 8443.0, "tcp-5432": 5432.0}},
		{reviews, "metadata.labels", map[string]any{
			"app":                              "reviews",
			"version":                          "v1",
			"ambient-agent.io/node":            "vm-1",
			"app.kubernetes.io/managed-by":     "ambient-agent",
			"networking.istio.io/tunnel":       "http",
			"istio.io/use-waypoint":            "shared-waypoint",
			"istio.io/use-waypoint-namespace":  "mesh",
			"service.ambient-agent.io/api":     "true",
			"service.ambient-agent.io/reviews": "true",
		}},
		{apiSvc, "spec.hosts", []any{"api.shop.example.com"}},
		{apiSvc, "spec.addresses", nil},
		{apiSvc, "spec.location", "MESH_INTERNAL"},
		{apiSvc, "spec.resolution", "STATIC"},
		{apiSvc, "spec.ports", []any{
			map[string]any{"number": 443.0, "targetPort": 8443.0, "name": "https-443", "protocol": "HTTPS"},
			map[string]any{"number": 5432.0, "targetPort": 5432.0, "name": "tcp-5432", "protocol": "TCP"},
		}},
		{apiSvc, "spec.workloadSelector.labels", map[string]any{"service.ambient-agent.io/api": "true"}},
		{apiSvc, "metadata.labels", map[string]any{"app.kubernetes.io/managed-by": "ambient-agent"}},
		{reviewsSvc, "spec.hosts", []any{"reviews.shop.svc.cluster.local"}},
		{reviewsSvc, "spec.addresses", []any{"172.30.0.10"}},
		{reviewsSvc, "spec.location", "MESH_INTERNAL"},
		{reviewsSvc, "spec.resolution", "STATIC"},
		{reviewsSvc, "spec.ports", []any{
			map[string]any{"number": 9080.0, "targetPort": 8080.0, "name": "http-9080", "protocol": "HTTP"},
		}},
		{reviewsSvc, "spec.workloadSelector.labels", map[string]any{"service.ambient-agent.io/reviews": "true"}},
		{reviewsSvc, "metadata.labels", map[string]any{
			"app.kubernetes.io/managed-by": "ambient-agent",
			"istio.io/use-waypoint":        "waypoint",
		}},
	}
	for _, c := range checks {
		if got := field(t, c.doc, c.path); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s: %s = %#v, want %#v", field(t, c.doc, "kind"), field(t, c.doc, "metadata.name"), c.path, got, c.want)
		}
	}
	// istiod merges spec and metadata labels; both carry the full set.
	for _, we := range []map[string]any{api, reviews} {
		if s, m := field(t, we, "spec.labels"), field(t, we, "metadata.labels"); !reflect.DeepEqual(s, m) {
			t.Errorf("WorkloadEntry %s: spec.labels %v != metadata.labels %v", field(t, we, "metadata.name"), s, m)
		}
	}
	// Every ServiceEntry selects the WorkloadEntries of the workloads its [[service]] names, and no other.
	backs := map[string][]string{"api": {"api", "reviews-v1"}, "reviews": {"reviews-v1"}}
	for _, se := range []map[string]any{apiSvc, reviewsSvc} {
		sel := field(t, se, "spec.workloadSelector.labels").(map[string]any)
		var selected []string
		for _, we := range []map[string]any{api, reviews} {
			if selects(sel, field(t, we, "metadata.labels").(map[string]any)) {
				selected = append(selected, field(t, we, "metadata.name").(string))
			}
		}
		if name := field(t, se, "metadata.name").(string); !reflect.DeepEqual(selected, backs[name]) {
			t.Errorf("ServiceEntry %s selects %v, want %v", name, selected, backs[name])
		}
	}
}

func selects(selector, labels map[string]any) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func TestExportKubernetesComments(t *testing.T) {
	out := exportKubernetes(t, exportConfig)
	for _, want := range []string{
		"# A WorkloadEntry holds one address; not exported: fd00::12.\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry",
		"# No vips in the config: Istio allocates an address from 240.240.0.0/16",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestExportKubernetesNothingToExport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[node]\nname = \"vm-2\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := exportKubernetes(t, path)
	header, docs := parseDocuments(t, out)
	if len(docs) != 0 || !strings.Contains(header, "nothing to apply") {
		t.Errorf("a host with no workloads and no services: %d documents, output:\n%s", len(docs), out)
	}
}

func TestExportUsage(t *testing.T) {
	for _, args := range [][]string{
		{"export"},
		{"export", "helm"},
		{"export", "-config", exportConfig},
		{"export", "kubernetes", "extra"},
		{"export", "kubernetes", "-nope"},
	} {
		code, out, errOut := run(args...)
		if code != 2 || !strings.Contains(errOut, "usage: ambient-agent export") || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, a usage line and no output", args, code, out, errOut)
		}
		if len(args) < 2 || args[1] != "kubernetes" {
			if !strings.Contains(errOut, `one of "kubernetes"`) {
				t.Errorf("%v: stderr %q does not name the supported kind", args, errOut)
			}
		}
	}
	for _, args := range [][]string{{"export", "-h"}, {"export", "kubernetes", "-h"}, {"help", "export"}} {
		if code, _, _ := run(args...); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
	}
}

func TestExportBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	src := "[node]\nname = \"vm-1\"\n\n[[workload]]\nname = \"web\"\naddresses = [\"10.0.0.5\"]\nservce_account = \"web\"\n\n" +
		"[[service]]\nname = \"web\"\nports = []\nworkloads = [\"nope\"]\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("export", "kubernetes", "-config", path)
	if code != 1 || out != "" || !strings.Contains(errOut, path+":7: workload[0].servce_account: unknown key") {
		t.Errorf("unknown key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// Several problems in values: each is printed on a line of its own.
	src = strings.Replace(src, "servce_account", "service_account", 1)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run("export", "kubernetes", "-config", path)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || out != "" || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], path+":11: service[0].ports: ") || !strings.HasPrefix(lines[1], path+":12: service[0].workloads[0]: ") {
		t.Errorf("two problems: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}

	code, _, errOut = run("export", "kubernetes", "-config", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
}

func TestSetWaypointLabels(t *testing.T) {
	for _, c := range []struct {
		use  string
		have map[string]string
		want map[string]string
	}{
		{"", map[string]string{useWaypointNamespace: "x"}, map[string]string{useWaypointNamespace: "x"}},
		{"none", nil, map[string]string{useWaypointLabel: "none"}},
		{"wp", map[string]string{useWaypointNamespace: "stale"}, map[string]string{useWaypointLabel: "wp"}},
		{"shop/wp", nil, map[string]string{useWaypointLabel: "wp"}},
		{"mesh/wp", nil, map[string]string{useWaypointLabel: "wp", useWaypointNamespace: "mesh"}},
	} {
		labels := map[string]string{}
		for k, v := range c.have {
			labels[k] = v
		}
		setWaypointLabels(labels, c.use, "shop")
		if !reflect.DeepEqual(labels, c.want) {
			t.Errorf("use_waypoint %q in namespace shop: labels %v, want %v", c.use, labels, c.want)
		}
	}
}

func TestIstioProtocol(t *testing.T) {
	for in, want := range map[string]string{
		"": "TCP", "tcp": "TCP", "http": "HTTP", "HTTP": "HTTP", "http2": "HTTP2", "kubernetes.io/h2c": "HTTP2",
		"grpc": "GRPC", "https": "HTTPS", "tls": "TLS", "mysql": "TCP",
	} {
		if got := istioProtocol(in); got != want {
			t.Errorf("istioProtocol(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWorkloadPortsConflict(t *testing.T) {
	a := config.Service{Name: "a", Ports: []config.ServicePort{{Port: 80, TargetPort: 8080, AppProtocol: "http"}, {Port: 22, TargetPort: 22}}}
	b := config.Service{Name: "b", Ports: []config.ServicePort{{Port: 80, TargetPort: 9090, AppProtocol: "http"}, {Port: 22, TargetPort: 22}}}
	ports, conflicts := workloadPorts([]config.Service{a, b})
	if want := map[string]uint16{"tcp-22": 22}; !reflect.DeepEqual(ports, want) {
		t.Errorf("ports %v, want %v", ports, want)
	}
	if !reflect.DeepEqual(conflicts, []string{"http-80"}) {
		t.Errorf("conflicts %v, want [http-80]", conflicts)
	}
	if ports, conflicts := workloadPorts(nil); ports != nil || conflicts != nil {
		t.Errorf("no services: ports %v, conflicts %v", ports, conflicts)
	}
}

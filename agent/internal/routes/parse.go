package routes

import (
	"fmt"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/ambient-agent/ambient-agent/agent/internal/yamldocs"
)

// Group is the Gateway API's API group.
const Group = "gateway.networking.k8s.io"

// Kinds of route the package reads.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
	KindTCPRoute  = "TCPRoute"
)

// Route is one route resource of a file: exactly one of HTTP, GRPC and TCP is set.
type Route struct {
	Source    Source
	Kind      string
	Namespace string
	Name      string
	HTTP      *gatewayv1.HTTPRoute
	GRPC      *gatewayv1.GRPCRoute
	TCP       *gatewayv1.TCPRoute
}

// Key is "namespace/name".
func (r *Route) Key() string { return r.Namespace + "/" + r.Name }

// Source is where a route or a problem comes from.
type Source = yamldocs.Source

// Problem is one thing wrong with a route file: the file cannot be used.
type Problem struct {
	Source
	Route string // "kind namespace/name" when known
	Msg   string
}

func (p Problem) String() string {
	if p.Route != "" {
		return p.Source.String() + ": " + p.Route + ": " + p.Msg
	}
	return p.Source.String() + ": " + p.Msg
}

// Problems is the error LoadDir returns: every problem found, in file and document order.
type Problems []Problem

func (ps Problems) Error() string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// typeMeta is what tells a route from the other documents of a policy directory.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Parse reads the HTTPRoute, GRPCRoute and TCPRoute documents of one file (gateway.networking.k8s.io/v1;
// v1beta1 for HTTPRoute, v1alpha2 for TCPRoute) and skips every other document (the policy package reads those). Each is decoded strictly into
// the Gateway API's types: an unknown or misspelt field is a problem. If anything is wrong, Parse returns no
// routes and every problem: a file is used whole or not at all.
func Parse(name string, data []byte) ([]Route, []Problem) {
	var routes []Route
	var problems []Problem
	for _, doc := range yamldocs.Split(data) {
		src := Source{File: name, Doc: doc.Index, Line: doc.FirstLine}
		var tm typeMeta
		if err := yaml.Unmarshal([]byte(doc.Text), &tm); err != nil {
			continue // not YAML the policy package can read either: it reports it
		}
		group, version, _ := strings.Cut(tm.APIVersion, "/")
		if group != Group || (tm.Kind != KindHTTPRoute && tm.Kind != KindGRPCRoute && tm.Kind != KindTCPRoute) {
			continue
		}
		r, err := decode(tm.Kind, version, []byte(doc.Text))
		if err != nil {
			problems = append(problems, Problem{Source: src, Msg: err.Error()})
			continue
		}
		r.Source = src
		if msg := checkMetadata(r); msg != "" {
			problems = append(problems, Problem{Source: src, Route: r.Kind + " " + r.Key(), Msg: msg})
			continue
		}
		routes = append(routes, *r)
	}
	problems = append(problems, duplicates(routes)...)
	if len(problems) > 0 {
		return nil, problems
	}
	return routes, nil
}

func decode(kind, version string, data []byte) (*Route, error) {
	switch {
	case kind == KindHTTPRoute && (version == "v1" || version == "v1beta1"):
		var hr gatewayv1.HTTPRoute
		if err := yaml.UnmarshalStrict(data, &hr); err != nil {
			return nil, fmt.Errorf("HTTPRoute: %w", err)
		}
		return &Route{Kind: kind, Namespace: hr.Namespace, Name: hr.Name, HTTP: &hr}, nil
	case kind == KindGRPCRoute && version == "v1":
		var gr gatewayv1.GRPCRoute
		if err := yaml.UnmarshalStrict(data, &gr); err != nil {
			return nil, fmt.Errorf("GRPCRoute: %w", err)
		}
		return &Route{Kind: kind, Namespace: gr.Namespace, Name: gr.Name, GRPC: &gr}, nil
	case kind == KindTCPRoute && (version == "v1" || version == "v1alpha2"):
		var tr gatewayv1.TCPRoute
		if err := yaml.UnmarshalStrict(data, &tr); err != nil {
			return nil, fmt.Errorf("TCPRoute: %w", err)
		}
		return &Route{Kind: kind, Namespace: tr.Namespace, Name: tr.Name, TCP: &tr}, nil
	}
	return nil, fmt.Errorf("%s/%s %s is not supported: use %s/v1", Group, version, kind, Group)
}

func checkMetadata(r *Route) string {
	switch {
	case r.Name == "":
		return "metadata.name is required"
	case r.Namespace == "":
		return "metadata.namespace is required: a host has no `kubectl -n`, so every route names its namespace"
	}
	return ""
}

// duplicates reports routes of one kind, namespace and name: Kubernetes could not hold both.
func duplicates(routes []Route) []Problem {
	seen := map[string]Source{}
	var out []Problem
	for _, r := range routes {
		k := r.Kind + " " + r.Key()
		if first, ok := seen[k]; ok {
			out = append(out, Problem{Source: r.Source, Route: k, Msg: "defined twice; first at " + first.String()})
			continue
		}
		seen[k] = r.Source
	}
	return out
}

// maxFileSize bounds what LoadDir reads, as for policies.
const maxFileSize = 16 << 20

// LoadDir reads the routes of every *.yaml and *.yml file directly in dir (hidden files skipped), in name
// order. All or nothing: on any problem it returns no routes and every problem, so the caller keeps its own.
// This is the package's only access to the filesystem.
func LoadDir(dir string) ([]Route, error) {
	files, unreadable, err := yamldocs.ReadDir(dir, maxFileSize)
	if err != nil {
		return nil, Problems{{Source: Source{File: dir}, Msg: "cannot read the directory: " + err.Error()}}
	}
	var routes []Route
	var problems Problems
	for _, u := range unreadable {
		problems = append(problems, Problem{Source: Source{File: u.Path}, Msg: u.Msg})
	}
	for _, f := range files {
		rs, ps := Parse(f.Path, f.Data)
		routes = append(routes, rs...)
		problems = append(problems, ps...)
	}
	problems = append(problems, duplicates(routes)...)
	if len(problems) > 0 {
		return nil, problems
	}
	return routes, nil
}

package policy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ambient-agent/ambient-agent/agent/internal/config"
	"github.com/ambient-agent/ambient-agent/agent/internal/yamldocs"
)

const istioSecurityGroup = "security.istio.io"

// Parse reads one file of YAML documents separated by "---": Istio AuthorizationPolicy and
// PeerAuthentication objects (security.istio.io/v1 or v1beta1), validated as istiod's admission webhook
// would. Documents of any other kind are returned with only their kind and metadata, for Compile to ignore
// with a warning. Empty documents are skipped; documents are numbered from 1, counting non-empty ones.
//
// name only labels problems and sources (LoadDir passes the path). If anything is wrong, Parse returns no
// resources and every problem: a file is used whole or not at all.
func Parse(name string, data []byte) ([]Resource, []Problem) {
	var resources []Resource
	var problems []Problem
	for _, doc := range splitDocuments(data) {
		r, ps := parseDocument(name, doc)
		problems = append(problems, ps...)
		if r != nil {
			resources = append(resources, *r)
		}
	}
	problems = append(problems, Duplicates(resources)...)
	if len(problems) > 0 {
		return nil, problems
	}
	return resources, nil
}

// Duplicates reports resources of the same kind, namespace and name: Kubernetes could not hold both, and
// which one to enforce would be a guess.
func Duplicates(resources []Resource) []Problem {
	type key struct {
		kind      Kind
		namespace string
		name      string
	}
	seen := map[key]Source{}
	var problems []Problem
	for _, r := range resources {
		if r.AuthorizationPolicy == nil && r.PeerAuthentication == nil {
			continue
		}
		k := key{r.Kind, r.Namespace, r.Name}
		if first, dup := seen[k]; dup {
			problems = append(problems, Problem{Source: r.Source, Policy: r.Key(), Field: "metadata.name",
				Msg: string(r.Kind) + " defined twice; first at " + first.String()})
			continue
		}
		seen[k] = r.Source
	}
	return problems
}

// document is one YAML document of a file.
type document = yamldocs.Doc

// splitDocuments cuts a file at "---" (and "...") lines. We split ourselves rather than ask the YAML
// library, so every document keeps its line offset in the file.
func splitDocuments(data []byte) []document { return yamldocs.Split(data) }

func parseDocument(file string, doc document) (*Resource, []Problem) {
	loc := newLineLocator(doc.Text, doc.FirstLine)
	d := &decoder{src: Source{File: file, Doc: doc.Index}, lines: loc}
	top, ok := decodeYAML(d, doc)
	if !ok {
		return nil, d.problems
	}
	r := &Resource{Source: Source{File: file, Doc: doc.Index, Line: loc.firstLine()}}
	r.APIVersion = d.str(fieldPath{}.key("apiVersion"), top["apiVersion"])
	r.Kind = Kind(d.str(fieldPath{}.key("kind"), top["kind"]))
	if r.APIVersion == "" {
		d.fail(fieldPath{}.key("apiVersion"), "required (security.istio.io/v1 for Istio policies)")
	}
	if r.Kind == "" {
		d.fail(fieldPath{}.key("kind"), "required (AuthorizationPolicy or PeerAuthentication)")
	}
	group, version, _ := strings.Cut(r.APIVersion, "/")
	otherMetadata(r, top["metadata"])
	if group != istioSecurityGroup || (r.Kind != KindAuthorizationPolicy && r.Kind != KindPeerAuthentication) {
		return r, d.problems
	}
	if r.Name != "" && r.Namespace != "" {
		d.policy = r.Key()
	}
	if version != "v1" && version != "v1beta1" {
		d.fail(fieldPath{}.key("apiVersion"), "%s is not supported for %s: use %s/v1 (or v1beta1)", r.APIVersion, r.Kind, istioSecurityGroup)
	}
	d.fields(fieldPath{}, top, "apiVersion", "kind", "metadata", "spec", "status")
	d.metadata(r, top["metadata"])
	spec := fieldPath{}.key("spec")
	if r.Kind == KindAuthorizationPolicy {
		r.AuthorizationPolicy = d.authorizationPolicy(spec, d.object(spec, top["spec"]))
		d.dryRunAnnotation(r)
	} else {
		r.PeerAuthentication = d.peerAuthentication(spec, d.object(spec, top["spec"]))
		if _, set := r.Annotations[DryRunAnnotation]; set {
			d.fail(fieldPath{}.key("metadata").key("annotations").key(DryRunAnnotation), "only an AuthorizationPolicy may be dry-run; remove the annotation")
		}
	}
	return r, d.problems
}

// decodeYAML turns the document into JSON values; YAML syntax errors and duplicate keys are problems.
func decodeYAML(d *decoder, doc document) (map[string]any, bool) {
	j, err := yaml.YAMLToJSONStrict([]byte(doc.Text))
	if err != nil {
		line, msg := yamlError(err)
		// The parser may point one past the end of an unterminated document.
		line = min(line, strings.Count(doc.Text, "\n")+1)
		src := d.src
		src.Line = doc.FirstLine + line - 1
		if line <= 0 {
			src.Line = d.lines.firstLine()
		}
		d.problems = append(d.problems, Problem{Source: src, Msg: "invalid YAML: " + msg})
		return nil, false
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		d.fail(fieldPath{}, "invalid YAML: %v", err)
		return nil, false
	}
	top, ok := v.(map[string]any)
	if !ok {
		d.fail(fieldPath{}, "a document must be a Kubernetes object (apiVersion, kind, metadata, spec), not %s", describeValue(v))
		return nil, false
	}
	return top, true
}

// yamlError extracts the document-relative line ("yaml: line 3: ...") and the message of a YAML error.
func yamlError(err error) (int, string) {
	msg := err.Error()
	i := strings.Index(msg, "line ")
	if i < 0 {
		return 0, strings.TrimPrefix(msg, "yaml: ")
	}
	rest := msg[i+len("line "):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err2 := strconv.Atoi(rest[:j])
	if err2 != nil {
		return 0, strings.TrimPrefix(msg, "yaml: ")
	}
	return n, strings.TrimSpace(strings.TrimPrefix(rest[j:], ":"))
}

func (d *decoder) metadata(r *Resource, v any) {
	p := fieldPath{}.key("metadata")
	m := d.object(p, v)
	// Beyond the five we read, the keys Kubernetes fills in are accepted and ignored, so that the output of
	// `kubectl get -o yaml` loads.
	d.fields(p, m, "name", "namespace", "annotations", "labels", "creationTimestamp",
		"uid", "resourceVersion", "generation", "managedFields", "selfLink", "ownerReferences", "finalizers",
		"generateName", "deletionTimestamp", "deletionGracePeriodSeconds")
	r.Name = d.str(p.key("name"), m["name"])
	r.Namespace = d.str(p.key("namespace"), m["namespace"])
	r.Annotations = d.strMap(p.key("annotations"), m["annotations"])
	d.strMap(p.key("labels"), m["labels"])
	switch {
	case r.Name == "":
		d.fail(p.key("name"), "required")
	case !config.IsDNSSubdomain(r.Name):
		d.fail(p.key("name"), "%q is not a valid name (lowercase letters, digits, '-' and '.', at most 253)", r.Name)
	}
	switch {
	case r.Namespace == "":
		d.fail(p.key("namespace"), "required: a host has no `kubectl -n`, so every policy names its namespace")
	case !config.IsDNSLabel(r.Namespace):
		d.fail(p.key("namespace"), "%q is not a valid namespace (lowercase letters, digits and '-', at most 63)", r.Namespace)
	}
	if ts := d.str(p.key("creationTimestamp"), m["creationTimestamp"]); ts != "" {
		t, err := time.Parse(time.RFC3339, ts)
		if err != nil {
			d.fail(p.key("creationTimestamp"), "not an RFC 3339 time: %q", ts)
		}
		r.CreationTimestamp = t
	}
}

// otherMetadata takes what it can from the metadata of a document Compile will ignore, never failing.
func otherMetadata(r *Resource, v any) {
	m, _ := v.(map[string]any)
	r.Name, _ = m["name"].(string)
	r.Namespace, _ = m["namespace"].(string)
}

func (d *decoder) dryRunAnnotation(r *Resource) {
	v, set := r.Annotations[DryRunAnnotation]
	if !set {
		return
	}
	p := fieldPath{}.key("metadata").key("annotations").key(DryRunAnnotation)
	if _, err := strconv.ParseBool(v); err != nil {
		d.fail(p, "%q is not a boolean (use \"true\" or \"false\")", v)
	}
	if a := r.AuthorizationPolicy.Action; a != ActionAllow && a != ActionDeny {
		d.fail(p, "dry-run is supported for ALLOW and DENY policies only, not %s", a)
	}
}

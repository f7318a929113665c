package proxy

import (
	"github.com/ambient-agent/ambient-agent/agent/internal/state"
	"github.com/ambient-agent/ambient-agent/agent/internal/telemetry"
)

// connLabels builds Istio's connection labels from what the proxy knows of
// both ends. Unknown ends stay empty and are reported as "unknown".
func connLabels(reporter string, src *state.Workload, srcPrincipal string, dst *state.Workload, dstPrincipal string, mtls bool) telemetry.ConnLabels {
	l := telemetry.ConnLabels{
		Reporter:                 reporter,
		SourcePrincipal:          srcPrincipal,
		DestinationPrincipal:     dstPrincipal,
		ConnectionSecurityPolicy: telemetry.SecurityUnknown,
	}
	if mtls {
		l.ConnectionSecurityPolicy = telemetry.SecurityMutualTLS
	}
	if src != nil {
		w := labelsOf(src)
		l.SourceWorkload, l.SourceWorkloadNamespace, l.SourceCluster = w.name, w.namespace, w.cluster
		l.SourceCanonicalService, l.SourceCanonicalRevision = w.service, w.revision
		l.SourceApp, l.SourceVersion = w.service, w.revision
		l.SourceRegion, l.SourceZone = w.region, w.zone
		if l.SourcePrincipal == "" && mtls { // only an authenticated peer has a principal
			l.SourcePrincipal = principal(src)
		}
	}
	if dst != nil {
		w := labelsOf(dst)
		l.DestinationWorkload, l.DestinationWorkloadNS, l.DestinationCluster = w.name, w.namespace, w.cluster
		l.DestinationCanonicalSvc, l.DestinationCanonicalRev = w.service, w.revision
		l.DestinationApp, l.DestinationVersion = w.service, w.revision
		l.DestinationRegion, l.DestinationZone = w.region, w.zone
		if l.DestinationPrincipal == "" {
			l.DestinationPrincipal = principal(dst)
		}
	}
	return l
}

// workloadLabels are what Istio's labels and baggage say of a workload, on
// either end of a connection.
type workloadLabels struct {
	name, namespace, service, revision, cluster, region, zone string
}

func labelsOf(w *state.Workload) workloadLabels {
	name := telemetry.WorkloadName(w.Labels, w.Name)
	return workloadLabels{name: name, namespace: w.Namespace, service: telemetry.CanonicalService(w.Labels, name),
		revision: telemetry.CanonicalRevision(w.Labels), cluster: w.ClusterID, region: w.Locality.Region, zone: w.Locality.Zone}
}

func principal(w *state.Workload) string {
	id, err := w.Identity()
	if err != nil {
		return ""
	}
	return id.String()
}

// withService sets the destination service labels (at a waypoint, or for a
// connection that was addressed to a VIP).
func withService(l *telemetry.ConnLabels, svc *state.Service) {
	if svc == nil {
		return
	}
	l.DestinationService = svc.Hostname
	l.DestinationServiceName = svc.Name
	l.DestinationServiceNS = svc.Namespace
}

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
		l.SourceWorkload = telemetry.WorkloadName(src.Labels, src.Name)
		l.SourceWorkloadNamespace = src.Namespace
		l.SourceCanonicalService = telemetry.CanonicalService(src.Labels, l.SourceWorkload)
		l.SourceCanonicalRevision = telemetry.CanonicalRevision(src.Labels)
		l.SourceApp, l.SourceVersion = l.SourceCanonicalService, l.SourceCanonicalRevision
		l.SourceCluster = src.ClusterID
		l.SourceRegion, l.SourceZone = src.Locality.Region, src.Locality.Zone
		if l.SourcePrincipal == "" && mtls { // only an authenticated peer has a principal
			l.SourcePrincipal = principal(src)
		}
	}
	if dst != nil {
		l.DestinationWorkload = telemetry.WorkloadName(dst.Labels, dst.Name)
		l.DestinationWorkloadNS = dst.Namespace
		l.DestinationCanonicalSvc = telemetry.CanonicalService(dst.Labels, l.DestinationWorkload)
		l.DestinationCanonicalRev = telemetry.CanonicalRevision(dst.Labels)
		l.DestinationApp, l.DestinationVersion = l.DestinationCanonicalSvc, l.DestinationCanonicalRev
		l.DestinationCluster = dst.ClusterID
		l.DestinationRegion, l.DestinationZone = dst.Locality.Region, dst.Locality.Zone
		if l.DestinationPrincipal == "" {
			l.DestinationPrincipal = principal(dst)
		}
	}
	return l
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

// Package routes compiles Gateway API routes attached to services (GAMMA: an HTTPRoute or GRPCRoute whose
// parentRef is a Service) into what the L7 waypoint matches requests against: per service, the routes' rules in
// the Gateway API's precedence, each with its weighted backends and filters.
//
// Routes are parsed with the Gateway API's own Go types (sigs.k8s.io/gateway-api/apis/v1), strictly: an unknown
// field is an error naming it. A file with any error is not used, and a directory with any error changes nothing
// (the caller keeps the routes it has), as for policies. Like policy and state, the package is pure but for
// LoadDir: no sockets, no net/http; requests are matched in its own terms (Request).
package routes

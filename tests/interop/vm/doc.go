// Package vm tests `ambient-agent join istio` (package vmjoin) on the files Istio's own tests say
// `istioctl x workload entry configure` writes: the golden files of istioctl/pkg/workload/testdata/vmconfig, read
// from the istio.io/istio module this module builds with.
package vm

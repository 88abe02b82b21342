package speaker

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// TestBGPServices: which Services node n1 may advertise by BGP. Unlike layer
// 2 there is no election and memberlist plays no part: every eligible node
// advertises.
func TestBGPServices(t *testing.T) {
	svcAddrs := func(name string, eligible bool, ips ...string) bgp.ServiceAddrs {
		s := bgp.ServiceAddrs{Service: "default/" + name, Labels: map[string]string{"app": name}, Pool: "lab", Eligible: eligible}
		for _, ip := range ips {
			s.Addresses = append(s.Addresses, netip.MustParseAddr(ip))
		}
		return s
	}
	excluded := func(n *corev1.Node) { n.Labels[ExcludeLabel] = "" }
	clusterIP := service("default", "cip", "172.25.254.53")
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	tests := []struct {
		name     string
		nodes    []corev1.Node
		services []corev1.Service
		slices   []discoveryv1.EndpointSlice
		alive    []string
		want     []bgp.ServiceAddrs
	}{
		{
			name:     "ready endpoint elsewhere, not alive in memberlist: eligible",
			nodes:    threeNodes,
			services: []corev1.Service{service("default", "web", "172.25.254.50", "fd00:254::50")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n2"})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", true, "172.25.254.50", "fd00:254::50")},
		},
		{
			name:     "no ready endpoint: listed but not eligible, so its paths are withdrawn",
			nodes:    threeNodes,
			services: []corev1.Service{service("default", "web", "172.25.254.50")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1", ready: no})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", false, "172.25.254.50")},
		},
		{
			name:     "Local policy with a ready endpoint elsewhere only: not eligible",
			nodes:    threeNodes,
			services: []corev1.Service{local(service("default", "web", "172.25.254.50"))},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n2"}, ep{node: "n1", ready: no})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", false, "172.25.254.50")},
		},
		{
			name:     "Local policy with a ready local endpoint: eligible",
			nodes:    threeNodes,
			services: []corev1.Service{local(service("default", "web", "172.25.254.50"))},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1", ready: yes})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", true, "172.25.254.50")},
		},
		{
			name:     "excluded node: not eligible",
			nodes:    []corev1.Node{node("n1", excluded), node("n2")},
			services: []corev1.Service{service("default", "web", "172.25.254.50")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1"})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", false, "172.25.254.50")},
		},
		{
			name:     "NetworkUnavailable node: not eligible",
			nodes:    []corev1.Node{node("n1", netUnavailable), node("n2")},
			services: []corev1.Service{service("default", "web", "172.25.254.50")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1"})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", false, "172.25.254.50")},
		},
		{
			name:     "unknown node: not eligible",
			nodes:    []corev1.Node{node("n2")},
			services: []corev1.Service{service("default", "web", "172.25.254.50")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n2"})},
			want:     []bgp.ServiceAddrs{svcAddrs("web", false, "172.25.254.50")},
		},
		{
			name:     "Services without addresses or not LoadBalancer are left out; address outside every pool has no pool hint",
			nodes:    threeNodes,
			services: []corev1.Service{service("default", "pending"), clusterIP, service("default", "far", "10.10.0.1")},
			slices:   []discoveryv1.EndpointSlice{slice("default", "pending", ep{node: "n1"}), slice("default", "cip", ep{node: "n1"}), slice("default", "far", ep{node: "n1"})},
			want: []bgp.ServiceAddrs{{Service: "default/far", Labels: map[string]string{"app": "far"},
				Addresses: []netip.Addr{netip.MustParseAddr("10.10.0.1")}, Eligible: true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := Inputs{Node: "n1", Config: testConfig(), Services: tc.services, Slices: tc.slices, Nodes: tc.nodes, Alive: tc.alive}
			if diff := cmp.Diff(tc.want, bgpServices(in), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("bgpServices (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdvertised: the forwarder carries exactly the addresses of eligible
// Services that a path covers (aggregated prefixes included).
func TestAdvertised(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	svcs := []bgp.ServiceAddrs{
		{Service: "default/web", Addresses: []netip.Addr{a("172.25.254.50"), a("fd00:254::50")}, Eligible: true},
		{Service: "default/down", Addresses: []netip.Addr{a("172.25.254.51")}, Eligible: false},
		{Service: "default/agg", Addresses: []netip.Addr{a("10.9.0.7")}, Eligible: true},
	}
	paths := []bgp.Path{
		{Prefix: netip.MustParsePrefix("172.25.254.50/32")},
		{Prefix: netip.MustParsePrefix("172.25.254.51/32")},
		{Prefix: netip.MustParsePrefix("10.9.0.0/24")},
	}
	want := []Announcement{{Service: "default/web", Addr: a("172.25.254.50")}, {Service: "default/agg", Addr: a("10.9.0.7")}}
	if diff := cmp.Diff(want, advertised(svcs, paths), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("advertised (-want +got):\n%s", diff)
	}
}

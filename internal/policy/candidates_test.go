package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
)

func TestAdmitsService(t *testing.T) {
	alloc := func(a v1beta1.ServiceAllocation) *v1beta1.ServiceAllocation { return &a }
	tests := []struct {
		name      string
		alloc     *v1beta1.ServiceAllocation
		ns        string
		nsLabels  map[string]string
		svcLabels map[string]string
		want      bool
	}{
		{name: "no serviceAllocation admits all", ns: "any", want: true},
		{name: "empty serviceAllocation admits all", alloc: alloc(v1beta1.ServiceAllocation{Priority: 3}), ns: "any", want: true},
		{name: "listed namespace", alloc: alloc(v1beta1.ServiceAllocation{Namespaces: []string{"web"}}), ns: "web", want: true},
		{name: "unlisted namespace", alloc: alloc(v1beta1.ServiceAllocation{Namespaces: []string{"web"}}), ns: "db", want: false},
		{
			name:  "namespace selected by label",
			alloc: alloc(v1beta1.ServiceAllocation{Namespaces: []string{"web"}, NamespaceSelectors: []metav1.LabelSelector{sel(map[string]string{"team": "red"})}}),
			ns:    "db", nsLabels: map[string]string{"team": "red"}, want: true,
		},
		{
			name:  "namespace label does not match",
			alloc: alloc(v1beta1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{sel(map[string]string{"team": "red"})}}),
			ns:    "db", nsLabels: map[string]string{"team": "blue"}, want: false,
		},
		{
			name:  "service selected",
			alloc: alloc(v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{sel(map[string]string{"app": "x"})}}),
			ns:    "any", svcLabels: map[string]string{"app": "x"}, want: true,
		},
		{
			name:  "service not selected",
			alloc: alloc(v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{sel(map[string]string{"app": "x"})}}),
			ns:    "any", svcLabels: map[string]string{"app": "y"}, want: false,
		},
		{
			name: "namespace and service must both match",
			alloc: alloc(v1beta1.ServiceAllocation{
				Namespaces:       []string{"web"},
				ServiceSelectors: []metav1.LabelSelector{sel(map[string]string{"app": "x"})},
			}),
			ns: "db", svcLabels: map[string]string{"app": "x"}, want: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := pool("p", 0, "10.1.0.0/24")
			p.Spec.AllocateTo = tc.alloc
			cfg, ps := Resolve(Resources{Pools: []v1beta1.IPAddressPool{p}})
			if len(ps) > 0 {
				t.Fatalf("Resolve problems:\n%s", messages(ps))
			}
			if got := cfg.Pools["p"].AdmitsService(tc.ns, tc.nsLabels, tc.svcLabels); got != tc.want {
				t.Errorf("AdmitsService(%q, %v, %v) = %v, want %v", tc.ns, tc.nsLabels, tc.svcLabels, got, tc.want)
			}
		})
	}
}

func TestCandidatePools(t *testing.T) {
	withAlloc := func(name string, addr string, a *v1beta1.ServiceAllocation) v1beta1.IPAddressPool {
		p := pool(name, 0, addr)
		p.Spec.AllocateTo = a
		return p
	}
	pools := []v1beta1.IPAddressPool{
		pool("plain-b", 0, "10.1.0.0/24"),
		pool("plain-a", 0, "10.2.0.0/24"),
		withAlloc("prio-10", "10.3.0.0/24", &v1beta1.ServiceAllocation{Priority: 10}),
		withAlloc("prio-2", "10.4.0.0/24", &v1beta1.ServiceAllocation{Priority: 2, Namespaces: []string{"web"}}),
		withAlloc("prio-2-also", "10.5.0.0/24", &v1beta1.ServiceAllocation{Priority: 2}),
		withAlloc("ns-only", "10.6.0.0/24", &v1beta1.ServiceAllocation{Namespaces: []string{"web"}}),
		withAlloc("db-only", "10.7.0.0/24", &v1beta1.ServiceAllocation{Priority: 1, Namespaces: []string{"db"}}),
		func() v1beta1.IPAddressPool {
			p := pool("manual", 0, "10.8.0.0/24")
			p.Spec.AutoAssign = ptr.To(false)
			return p
		}(),
	}
	cfg, ps := Resolve(Resources{Pools: pools})
	if len(ps) > 0 {
		t.Fatalf("Resolve problems:\n%s", messages(ps))
	}
	names := func(ps []*Pool) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	tests := []struct {
		ns   string
		want []string
	}{
		{ns: "web", want: []string{"prio-2", "prio-2-also", "prio-10", "ns-only", "plain-a", "plain-b"}},
		{ns: "db", want: []string{"db-only", "prio-2-also", "prio-10", "plain-a", "plain-b"}},
		{ns: "other", want: []string{"prio-2-also", "prio-10", "plain-a", "plain-b"}},
	}
	for _, tc := range tests {
		t.Run(tc.ns, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, names(CandidatePools(cfg, tc.ns, nil, nil))); diff != "" {
				t.Errorf("CandidatePools(%q) (-want +got):\n%s", tc.ns, diff)
			}
		})
	}
}

// BenchmarkResolve resolves 1,000 pools (IPv4 /24s and IPv6 ranges) with an
// L2 advertisement per 10 pools, a BGP advertisement selecting all by label,
// and 100 peers.
func BenchmarkResolve(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("pools=%d", n), func(b *testing.B) {
			r := benchResources(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, ps := Resolve(r); len(ps) != 0 {
					b.Fatalf("problems: %s", messages(ps))
				}
			}
		})
	}
}

func benchResources(n int) Resources {
	var r Resources
	for i := range n {
		p := pool(fmt.Sprintf("pool-%05d", i), n-i, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), fmt.Sprintf("fd01::%x:0-fd01::%x:ffff", i, i))
		p.Labels = map[string]string{"bgp": "yes"}
		r.Pools = append(r.Pools, p)
		if i%10 == 0 {
			r.L2Advs = append(r.L2Advs, l2(fmt.Sprintf("l2-%05d", i), 0, func(s *v1beta1.L2AdvertisementSpec) {
				for j := i; j < i+10 && j < n; j++ {
					s.IPAddressPools = append(s.IPAddressPools, fmt.Sprintf("pool-%05d", j))
				}
			}))
		}
	}
	r.BGPAdvs = append(r.BGPAdvs, bgpAdv("all", 0, func(s *v1beta1.BGPAdvertisementSpec) {
		s.IPAddressPoolSelectors = []metav1.LabelSelector{sel(map[string]string{"bgp": "yes"})}
	}))
	for i := range 100 {
		r.Peers = append(r.Peers, peer(fmt.Sprintf("peer-%03d", i), 0, func(s *v1beta2.BGPPeerSpec) {
			s.Address = fmt.Sprintf("172.25.%d.%d", 200+i/250, 1+i%250)
		}))
	}
	return r
}

func TestPoolOf(t *testing.T) {
	cfg, ps := Resolve(Resources{Pools: []v1beta1.IPAddressPool{
		pool("a", 0, "10.1.0.0/24"), pool("b", 0, "10.2.0.10-10.2.0.20", "fd01::/120"),
	}})
	if len(ps) > 0 {
		t.Fatalf("Resolve problems:\n%s", messages(ps))
	}
	tests := []struct {
		addr string
		want string
	}{
		{"10.1.0.0", "a"}, {"10.1.0.255", "a"}, {"10.2.0.10", "b"}, {"10.2.0.20", "b"},
		{"::ffff:10.2.0.15", "b"}, {"fd01::ff", "b"},
		{"10.2.0.21", ""}, {"10.2.0.9", ""}, {"fd01::100", ""},
	}
	for _, tc := range tests {
		got := ""
		if p := cfg.PoolOf(netip.MustParseAddr(tc.addr)); p != nil {
			got = p.Name
		}
		if got != tc.want {
			t.Errorf("PoolOf(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

package policy

import (
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
)

// TestResolveRefusesDuplicates: a list naming one thing twice leaves its
// object out, with the field and the value in the message, as MetalLB
// refuses it; the objects around it stay.
func TestResolveRefusesDuplicates(t *testing.T) {
	zone := func(z string) metav1.LabelSelector { return sel(map[string]string{"zone": z}) }
	in := func(vals ...string) metav1.LabelSelector {
		return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: vals}}}
	}
	twoExprs := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "zone", Operator: metav1.LabelSelectorOpExists}, {Key: "zone", Operator: metav1.LabelSelectorOpExists},
	}}
	poolWith := func(f func(*v1beta1.ServiceAllocation)) v1beta1.IPAddressPool {
		return withPool(pool("bad", 1, "10.9.0.0/24"), func(p *v1beta1.IPAddressPool) {
			p.Spec.AllocateTo = &v1beta1.ServiceAllocation{}
			f(p.Spec.AllocateTo)
		})
	}
	tests := []struct {
		name    string
		add     func(*Resources)
		kind    string
		field   string
		message string
	}{
		{"pool addresses", func(r *Resources) { r.Pools = append(r.Pools, pool("bad", 1, "10.9.0.0/24", "10.9.0.0/24")) },
			KindIPAddressPool, "spec.addresses[1]", `"10.9.0.0/24" overlaps spec.addresses[0]`},
		{"pool namespaces", func(r *Resources) {
			r.Pools = append(r.Pools, poolWith(func(a *v1beta1.ServiceAllocation) { a.Namespaces = []string{"web", "web"} }))
		}, KindIPAddressPool, "spec.serviceAllocation.namespaces[1]", `"web" is listed more than once (also spec.serviceAllocation.namespaces[0])`},
		{"pool namespaceSelectors", func(r *Resources) {
			r.Pools = append(r.Pools, poolWith(func(a *v1beta1.ServiceAllocation) {
				a.NamespaceSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindIPAddressPool, "spec.serviceAllocation.namespaceSelectors[1]", "is the same selector as spec.serviceAllocation.namespaceSelectors[0]"},
		{"pool serviceSelectors, values in another order", func(r *Resources) {
			r.Pools = append(r.Pools, poolWith(func(a *v1beta1.ServiceAllocation) {
				a.ServiceSelectors = []metav1.LabelSelector{in("a", "b"), in("b", "a")}
			}))
		}, KindIPAddressPool, "spec.serviceAllocation.serviceSelectors[1]", "is the same selector as spec.serviceAllocation.serviceSelectors[0]"},
		{"l2 ipAddressPools", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) { s.IPAddressPools = []string{"p1", "p2", "p1"} }))
		}, KindL2Advertisement, "spec.ipAddressPools[2]", `"p1" is listed more than once (also spec.ipAddressPools[0])`},
		{"l2 ipAddressPoolSelectors", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) {
				s.IPAddressPoolSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindL2Advertisement, "spec.ipAddressPoolSelectors[1]", "is the same selector as spec.ipAddressPoolSelectors[0]"},
		{"l2 nodeSelectors", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) {
				s.NodeSelectors = []metav1.LabelSelector{zone("a"), zone("b"), zone("a")}
			}))
		}, KindL2Advertisement, "spec.nodeSelectors[2]", "is the same selector as spec.nodeSelectors[0]"},
		{"l2 serviceSelectors", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindL2Advertisement, "spec.serviceSelectors[1]", "is the same selector as spec.serviceSelectors[0]"},
		{"l2 interfaces", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) { s.Interfaces = []string{"eth0", "eth0"} }))
		}, KindL2Advertisement, "spec.interfaces[1]", `"eth0" is listed more than once`},
		{"l2 match expression twice in one selector", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) { s.NodeSelectors = []metav1.LabelSelector{twoExprs} }))
		}, KindL2Advertisement, "spec.nodeSelectors[0].matchExpressions[1]", "repeats spec.nodeSelectors[0].matchExpressions[0]"},
		{"l2 value twice in one match expression", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 1, func(s *v1beta1.L2AdvertisementSpec) { s.NodeSelectors = []metav1.LabelSelector{in("a", "a")} }))
		}, KindL2Advertisement, "spec.nodeSelectors[0].matchExpressions[0].values[1]", `"a" is listed more than once`},
		{"bgp ipAddressPools", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"p2", "p2"} }))
		}, KindBGPAdvertisement, "spec.ipAddressPools[1]", `"p2" is listed more than once`},
		{"bgp peers", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) { s.Peers = []string{"tor", "tor"} }))
		}, KindBGPAdvertisement, "spec.peers[1]", `"tor" is listed more than once`},
		{"bgp communities", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"65000:1", "65000:1"} }))
		}, KindBGPAdvertisement, "spec.communities[1]", `"65000:1" is listed more than once`},
		{"bgp ipAddressPoolSelectors", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindBGPAdvertisement, "spec.ipAddressPoolSelectors[1]", "is the same selector"},
		{"bgp nodeSelectors", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) { s.NodeSelectors = []metav1.LabelSelector{zone("a"), zone("a")} }))
		}, KindBGPAdvertisement, "spec.nodeSelectors[1]", "is the same selector"},
		{"bgp serviceSelectors", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 1, func(s *v1beta1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindBGPAdvertisement, "spec.serviceSelectors[1]", "is the same selector"},
		{"peer nodeSelectors", func(r *Resources) {
			r.Peers = append(r.Peers, peer("bad", 1, func(s *v1beta2.BGPPeerSpec) {
				s.Address = "172.25.254.9"
				s.NodeSelectors = []metav1.LabelSelector{zone("a"), zone("a")}
			}))
		}, KindBGPPeer, "spec.nodeSelectors[1]", "is the same selector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := goodResources()
			_, clean := Resolve(r)
			if len(clean) != 0 {
				t.Fatalf("good resources have problems:\n%s", messages(clean))
			}
			tc.add(&r)
			_, ps := Resolve(r)
			if len(ps) != 1 {
				t.Fatalf("Resolve problems:\n%swant exactly one, about %s bad", messages(ps), tc.kind)
			}
			p := ps[0]
			if p.Kind != tc.kind || p.Name != "bad" || p.Field != tc.field || !p.LeftOut || p.Dangling {
				t.Errorf("problem %s %s field %q leftOut %v dangling %v, want %s bad field %q left out", p.Kind, p.Name, p.Field, p.LeftOut, p.Dangling, tc.kind, tc.field)
			}
			if !strings.Contains(p.Message, tc.message) {
				t.Errorf("message %q lacks %q", p.Message, tc.message)
			}
		})
	}
}

// TestDuplicateIsErrDuplicate: the duplicate checks' errors match the
// sentinel, and read as their reason alone.
func TestDuplicateIsErrDuplicate(t *testing.T) {
	field, value, err := duplicateName("spec.peers", []string{"a", "b", "a"})
	if field != "spec.peers[2]" || value != "a" || !errors.Is(err, ErrDuplicate) {
		t.Fatalf(`duplicateName = %q, %q, %v; want "spec.peers[2]", "a", ErrDuplicate`, field, value, err)
	}
	if want := "is listed more than once (also spec.peers[0])"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

// TestDanglingReferenceResolvesWhenCreated: an advertisement naming a pool
// and a peer that do not exist yet is kept, with warnings only, and covers
// them as soon as they appear, with no change to the advertisement.
func TestDanglingReferenceResolvesWhenCreated(t *testing.T) {
	adv := bgpAdv("adv", 0, func(s *v1beta1.BGPAdvertisementSpec) {
		s.IPAddressPools = []string{"later"}
		s.Peers = []string{"tor-later"}
	})
	r := Resources{BGPAdvs: []v1beta1.BGPAdvertisement{adv}}
	cfg, ps := Resolve(r)
	if len(ps) != 2 {
		t.Fatalf("Resolve problems:\n%swant two dangling references", messages(ps))
	}
	for _, p := range ps {
		if !p.Dangling || p.LeftOut || !errors.Is(p, ErrMissingReference) {
			t.Errorf("problem %q: dangling %v leftOut %v, want a dangling reference that keeps the advertisement", p.Message, p.Dangling, p.LeftOut)
		}
		if !strings.Contains(p.Message, "does not exist yet") {
			t.Errorf("message %q does not say the object does not exist yet", p.Message)
		}
	}
	if len(cfg.BGPAdvertisements) != 1 || len(cfg.BGPAdvertisements[0].Pools) != 0 {
		t.Fatalf("advertisements = %+v, want adv kept, covering no pool", cfg.BGPAdvertisements)
	}

	r.Pools = []v1beta1.IPAddressPool{pool("later", 1, "10.5.0.0/24")}
	r.Peers = []v1beta2.BGPPeer{peer("tor-later", 1, nil)}
	cfg, ps = Resolve(r)
	if len(ps) != 0 {
		t.Fatalf("after the pool and peer appear, Resolve problems:\n%s", messages(ps))
	}
	got := cfg.BGPAdvertisements[0]
	if len(got.Pools) != 1 || got.Pools[0] != "later" || len(got.Peers) != 1 || got.Peers[0] != "tor-later" {
		t.Errorf("advertisement = pools %v peers %v, want [later] [tor-later]", got.Pools, got.Peers)
	}
}

// TestBFDEchoOverIPv6: an advertisement announcing an IPv6 pool to a peer
// whose BFD profile uses echo mode is refused (MetalLB refuses the
// configuration): the IPv6 pool is not announced through it, the IPv4 pool
// still is.
func TestBFDEchoOverIPv6(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		peers       []string
	}{
		{"named peer", "spec.peers[0]", []string{"tor"}},
		{"every peer", "spec.peers", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Resources{
				Pools:       []v1beta1.IPAddressPool{pool("v4", 0, "10.1.0.0/24"), pool("v6", 0, "fd01::/120")},
				BFDProfiles: []v1beta1.BFDProfile{bfd("echo", 0, func(s *v1beta1.BFDProfileSpec) { s.EchoMode = ptr.To(true) })},
				Peers:       []v1beta2.BGPPeer{peer("tor", 0, func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "echo" })},
				BGPAdvs:     []v1beta1.BGPAdvertisement{bgpAdv("adv", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Peers = tc.peers })},
			}
			cfg, ps := Resolve(r)
			if len(ps) != 1 || ps[0].Field != tc.field || ps[0].Dangling || !errors.Is(ps[0], ErrIncompatible) || !strings.Contains(ps[0].Message, "echo mode") {
				t.Fatalf("Resolve problems:\n%swant one incompatible problem on %s about echo mode", messages(ps), tc.field)
			}
			if got := cfg.BGPAdvertisements[0].Pools; len(got) != 1 || got[0] != "v4" {
				t.Errorf("advertisement pools = %v, want [v4]", got)
			}
			r.BFDProfiles[0].Spec.EchoMode = ptr.To(false)
			if _, ps := Resolve(r); len(ps) != 0 {
				t.Errorf("without echo mode, Resolve problems:\n%s", messages(ps))
			}
		})
	}
}

package policy

import (
	"errors"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
)

const ns = "metallb-system"

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// meta makes object metadata; age counts minutes after t0, so a larger age
// is a newer object.
func meta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))}
}

func pool(name string, age int, addrs ...string) v1beta1.IPAddressPool {
	return v1beta1.IPAddressPool{ObjectMeta: meta(name, age), Spec: v1beta1.IPAddressPoolSpec{Addresses: addrs}}
}

func withPool(p v1beta1.IPAddressPool, f func(*v1beta1.IPAddressPool)) v1beta1.IPAddressPool {
	f(&p)
	return p
}

func l2(name string, age int, f func(*v1beta1.L2AdvertisementSpec)) v1beta1.L2Advertisement {
	a := v1beta1.L2Advertisement{ObjectMeta: meta(name, age)}
	if f != nil {
		f(&a.Spec)
	}
	return a
}

func bgpAdv(name string, age int, f func(*v1beta1.BGPAdvertisementSpec)) v1beta1.BGPAdvertisement {
	a := v1beta1.BGPAdvertisement{ObjectMeta: meta(name, age)}
	if f != nil {
		f(&a.Spec)
	}
	return a
}

func peer(name string, age int, f func(*v1beta2.BGPPeerSpec)) v1beta2.BGPPeer {
	p := v1beta2.BGPPeer{ObjectMeta: meta(name, age), Spec: v1beta2.BGPPeerSpec{MyASN: 64500, ASN: 64501, Address: "172.25.254.1"}}
	if f != nil {
		f(&p.Spec)
	}
	return p
}

func community(name string, age int, kv ...string) v1beta1.Community {
	c := v1beta1.Community{ObjectMeta: meta(name, age)}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Spec.Communities = append(c.Spec.Communities, v1beta1.CommunityAlias{Name: kv[i], Value: kv[i+1]})
	}
	return c
}

func bfd(name string, age int, f func(*v1beta1.BFDProfileSpec)) v1beta1.BFDProfile {
	b := v1beta1.BFDProfile{ObjectMeta: meta(name, age)}
	if f != nil {
		f(&b.Spec)
	}
	return b
}

func basicAuth(name, password string) corev1.Secret {
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"password": []byte(password)},
	}
}

func sel(matchLabels map[string]string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: matchLabels}
}

// summary is what a user sees of a Config: which objects are in it and what
// they point at.
type summary struct {
	Pools []string
	L2    map[string][]string // advertisement -> pools
	BGP   map[string][]string
	Peers []string
	BFD   []string
}

func summarize(c Config) summary {
	s := summary{L2: map[string][]string{}, BGP: map[string][]string{}}
	for name := range c.Pools {
		s.Pools = append(s.Pools, name)
	}
	slices.Sort(s.Pools)
	for _, a := range c.L2Advertisements {
		s.L2[a.Name] = a.Pools
	}
	for _, a := range c.BGPAdvertisements {
		s.BGP[a.Name] = a.Pools
	}
	for _, p := range c.Peers {
		s.Peers = append(s.Peers, p.Name)
	}
	for name := range c.BFDProfiles {
		s.BFD = append(s.BFD, name)
	}
	slices.Sort(s.BFD)
	return s
}

// prob is the part of a Problem the tests pin down.
type prob struct {
	Kind, Name, Field, Other string
	LeftOut, Dangling        bool
	Err                      string
}

var sentinels = map[string]error{
	"invalid": ErrInvalidField, "overlap": ErrOverlap, "duplicate": ErrDuplicate,
	"missing": ErrMissingReference, "community": ErrUnknownCommunity, "secret": ErrSecret,
	"incompatible": ErrIncompatible,
}

func probs(ps []Problem) []prob {
	var out []prob
	for _, p := range ps {
		var kinds []string
		for name, s := range sentinels {
			if errors.Is(p, s) {
				kinds = append(kinds, name)
			}
		}
		slices.Sort(kinds)
		out = append(out, prob{Kind: p.Kind, Name: p.Name, Field: p.Field, Other: p.Other, LeftOut: p.LeftOut, Dangling: p.Dangling, Err: strings.Join(kinds, "+")})
	}
	return out
}

func TestResolve(t *testing.T) {
	other := func(kind, name string) string { return kind + " " + ns + "/" + name }
	tests := []struct {
		name  string
		in    Resources
		want  summary
		probs []prob
	}{
		{
			name: "empty input, empty config",
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}},
		},
		{
			name: "l2 advertisement without pools covers every pool",
			in: Resources{
				Pools:  []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24"), pool("b", 1, "10.2.0.1-10.2.0.9")},
				L2Advs: []v1beta1.L2Advertisement{l2("all", 0, nil)},
			},
			want: summary{Pools: []string{"a", "b"}, L2: map[string][]string{"all": {"a", "b"}}, BGP: map[string][]string{}},
		},
		{
			name: "pools by name and by label selector",
			in: Resources{
				Pools: []v1beta1.IPAddressPool{
					pool("a", 0, "10.1.0.0/24"),
					withPool(pool("b", 0, "10.2.0.0/24"), func(p *v1beta1.IPAddressPool) { p.Labels = map[string]string{"tier": "gold"} }),
					pool("c", 0, "10.3.0.0/24"),
				},
				L2Advs: []v1beta1.L2Advertisement{l2("some", 0, func(s *v1beta1.L2AdvertisementSpec) {
					s.IPAddressPools = []string{"c", "b"}
					s.IPAddressPoolSelectors = []metav1.LabelSelector{sel(map[string]string{"tier": "gold"})}
				})},
			},
			want: summary{Pools: []string{"a", "b", "c"}, L2: map[string][]string{"some": {"b", "c"}}, BGP: map[string][]string{}},
		},
		{
			name:  "overlapping pools: the newer is left out",
			in:    Resources{Pools: []v1beta1.IPAddressPool{pool("b", 5, "10.0.0.0/24"), pool("a", 1, "10.0.0.0/16")}},
			want:  summary{Pools: []string{"a"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindIPAddressPool, Name: "b", Field: "spec.addresses[0]", Other: other(KindIPAddressPool, "a"), LeftOut: true, Err: "overlap"}},
		},
		{
			name:  "overlapping pools: age beats name",
			in:    Resources{Pools: []v1beta1.IPAddressPool{pool("a", 5, "10.0.0.128-10.0.0.200"), pool("b", 1, "10.0.0.0/24")}},
			want:  summary{Pools: []string{"b"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindIPAddressPool, Name: "a", Field: "spec.addresses[0]", Other: other(KindIPAddressPool, "b"), LeftOut: true, Err: "overlap"}},
		},
		{
			name:  "overlapping pools of the same age: the name sorting later is left out",
			in:    Resources{Pools: []v1beta1.IPAddressPool{pool("b", 0, "10.0.0.0/24"), pool("a", 0, "10.0.0.255-10.0.1.5")}},
			want:  summary{Pools: []string{"a"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindIPAddressPool, Name: "b", Field: "spec.addresses[0]", Other: other(KindIPAddressPool, "a"), LeftOut: true, Err: "overlap"}},
		},
		{
			name: "overlap chain: a pool overlapping only a left-out pool stays",
			in: Resources{Pools: []v1beta1.IPAddressPool{
				pool("a", 0, "10.0.0.0/25"), pool("b", 1, "10.0.0.100-10.0.0.150"), pool("c", 2, "10.0.0.140/30", "fd01::/64"),
			}},
			want:  summary{Pools: []string{"a", "c"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindIPAddressPool, Name: "b", Field: "spec.addresses[0]", Other: other(KindIPAddressPool, "a"), LeftOut: true, Err: "overlap"}},
		},
		{
			name: "adjacent and cross-family pools do not overlap",
			in: Resources{Pools: []v1beta1.IPAddressPool{
				pool("a", 0, "10.0.0.0/25", "fd01::/120"), pool("b", 1, "10.0.0.128/25"), pool("c", 2, "10.0.1.0-10.0.1.9", "fd01::100-fd01::1ff"),
			}},
			want: summary{Pools: []string{"a", "b", "c"}, L2: map[string][]string{}, BGP: map[string][]string{}},
		},
		{
			name: "same pool name in two namespaces: the newer is left out",
			in: Resources{Pools: []v1beta1.IPAddressPool{
				pool("a", 0, "10.1.0.0/24"),
				withPool(pool("a", 1, "10.2.0.0/24"), func(p *v1beta1.IPAddressPool) { p.Namespace = "other" }),
			}},
			want:  summary{Pools: []string{"a"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindIPAddressPool, Name: "a", Field: "metadata.name", Other: other(KindIPAddressPool, "a"), LeftOut: true, Err: "duplicate"}},
		},
		{
			name: "pool in-object checks",
			in: Resources{Pools: []v1beta1.IPAddressPool{
				pool("bad-cidr", 0, "10.0.0.0/33"),
				pool("reversed", 0, "10.0.0.9-10.0.0.1"),
				pool("mixed", 0, "10.0.0.1-fd01::1"),
				pool("whole", 0, "0.0.0.0/0"),
				pool("empty", 0),
				pool("self-overlap", 0, "10.9.0.0/24", "10.9.0.7-10.9.0.8"),
				withPool(pool("neg-priority", 0, "10.8.0.0/24"), func(p *v1beta1.IPAddressPool) {
					p.Spec.AllocateTo = &v1beta1.ServiceAllocation{Priority: -1}
				}),
				withPool(pool("dup-ns", 0, "10.7.0.0/24"), func(p *v1beta1.IPAddressPool) {
					p.Spec.AllocateTo = &v1beta1.ServiceAllocation{Namespaces: []string{"x", "x"}}
				}),
				withPool(pool("bad-selector", 0, "10.6.0.0/24"), func(p *v1beta1.IPAddressPool) {
					p.Spec.AllocateTo = &v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{{
						MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Bogus"}},
					}}}
				}),
				pool("good", 0, "10.5.0.0/24"),
			}},
			want: summary{Pools: []string{"good"}, L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{
				{Kind: KindIPAddressPool, Name: "bad-cidr", Field: "spec.addresses[0]", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "bad-selector", Field: "spec.serviceAllocation.serviceSelectors[0]", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "dup-ns", Field: "spec.serviceAllocation.namespaces[1]", LeftOut: true, Err: "duplicate+invalid"},
				{Kind: KindIPAddressPool, Name: "empty", Field: "spec.addresses", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "mixed", Field: "spec.addresses[0]", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "neg-priority", Field: "spec.serviceAllocation.priority", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "reversed", Field: "spec.addresses[0]", LeftOut: true, Err: "invalid"},
				{Kind: KindIPAddressPool, Name: "self-overlap", Field: "spec.addresses[1]", LeftOut: true, Err: "invalid+overlap"},
				{Kind: KindIPAddressPool, Name: "whole", Field: "spec.addresses[0]", LeftOut: true, Err: "invalid"},
			},
		},
		{
			name: "advertisement naming a missing pool keeps its other pools",
			in: Resources{
				Pools:  []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24")},
				L2Advs: []v1beta1.L2Advertisement{l2("adv", 0, func(s *v1beta1.L2AdvertisementSpec) { s.IPAddressPools = []string{"a", "ghost"} })},
			},
			want:  summary{Pools: []string{"a"}, L2: map[string][]string{"adv": {"a"}}, BGP: map[string][]string{}},
			probs: []prob{{Kind: KindL2Advertisement, Name: "adv", Field: "spec.ipAddressPools[1]", Other: "IPAddressPool ghost", Dangling: true, Err: "missing"}},
		},
		{
			name: "advertisement naming only missing pools covers none, not all",
			in: Resources{
				Pools:   []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24"), pool("b", 1, "10.1.0.0/25")},
				BGPAdvs: []v1beta1.BGPAdvertisement{bgpAdv("adv", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"b"} })},
			},
			want: summary{Pools: []string{"a"}, L2: map[string][]string{}, BGP: map[string][]string{"adv": nil}},
			probs: []prob{
				{Kind: KindIPAddressPool, Name: "b", Field: "spec.addresses[0]", Other: other(KindIPAddressPool, "a"), LeftOut: true, Err: "overlap"},
				{Kind: KindBGPAdvertisement, Name: "adv", Field: "spec.ipAddressPools[0]", Other: other(KindIPAddressPool, "b"), Dangling: true, Err: "missing"},
			},
		},
		{
			name: "unknown community alias leaves the advertisement out",
			in: Resources{
				Pools:       []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24")},
				Communities: []v1beta1.Community{community("c", 0, "gold", "65000:100")},
				BGPAdvs: []v1beta1.BGPAdvertisement{
					bgpAdv("ok", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"gold", "65000:7", "large:1:2:3"} }),
					bgpAdv("typo", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"gold", "silver"} }),
					bgpAdv("range", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"65536:1"} }),
				},
			},
			want: summary{Pools: []string{"a"}, L2: map[string][]string{}, BGP: map[string][]string{"ok": {"a"}}},
			probs: []prob{
				{Kind: KindBGPAdvertisement, Name: "range", Field: "spec.communities[0]", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPAdvertisement, Name: "typo", Field: "spec.communities[1]", LeftOut: true, Err: "community"},
			},
		},
		{
			name: "an alias defined twice: the newer Community object is left out",
			in: Resources{
				Communities: []v1beta1.Community{community("new", 2, "gold", "65000:2", "bronze", "65000:3"), community("old", 1, "gold", "65000:1")},
				BGPAdvs: []v1beta1.BGPAdvertisement{
					bgpAdv("uses-gold", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"gold"} }),
					bgpAdv("uses-bronze", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"bronze"} }),
				},
			},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{"uses-gold": nil}},
			probs: []prob{
				{Kind: KindCommunity, Name: "new", Field: "spec.communities[0].name", Other: other(KindCommunity, "old"), LeftOut: true, Err: "duplicate"},
				{Kind: KindBGPAdvertisement, Name: "uses-bronze", Field: "spec.communities[0]", Other: other(KindCommunity, "new"), LeftOut: true, Err: "community"},
			},
		},
		{
			name: "peer naming a missing BFD profile is left out",
			in: Resources{
				BFDProfiles: []v1beta1.BFDProfile{
					bfd("fast", 0, nil),
					bfd("broken", 0, func(s *v1beta1.BFDProfileSpec) { s.MinimumTTL = ptr.To[uint32](255) }),
				},
				Peers: []v1beta2.BGPPeer{
					peer("with-fast", 0, func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "fast" }),
					peer("with-slow", 0, func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "slow"; s.Address = "172.25.254.2" }),
					peer("with-broken", 0, func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "broken"; s.Address = "172.25.254.3" }),
				},
			},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}, Peers: []string{"with-fast"}, BFD: []string{"fast"}},
			probs: []prob{
				{Kind: KindBFDProfile, Name: "broken", Field: "spec.minimumTtl", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "with-broken", Field: "spec.bfdProfile", Other: other(KindBFDProfile, "broken"), LeftOut: true, Err: "missing"},
				{Kind: KindBGPPeer, Name: "with-slow", Field: "spec.bfdProfile", Other: other(KindBFDProfile, "slow"), LeftOut: true, Err: "missing"},
			},
		},
		{
			name: "duplicate peers: same session on overlapping nodes",
			in: Resources{Peers: []v1beta2.BGPPeer{
				peer("first", 0, nil),
				peer("again", 1, func(s *v1beta2.BGPPeerSpec) { s.Port = 179; s.ASN = 64999 }),
				peer("other-vrf", 2, func(s *v1beta2.BGPPeerSpec) { s.VRFName = "red" }),
				peer("other-port", 3, func(s *v1beta2.BGPPeerSpec) { s.Port = 1179 }),
				peer("zone-a", 4, func(s *v1beta2.BGPPeerSpec) {
					s.Address = "172.25.254.9"
					s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"zone": "a"})}
				}),
				peer("zone-b", 5, func(s *v1beta2.BGPPeerSpec) {
					s.Address = "172.25.254.9"
					s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"zone": "b"})}
				}),
				peer("rack-1", 6, func(s *v1beta2.BGPPeerSpec) {
					s.Address = "172.25.254.9"
					s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"rack": "1"})}
				}),
				peer("first", 7, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.3" }),
			}},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}, Peers: []string{"first", "other-port", "other-vrf", "zone-a", "zone-b"}},
			probs: []prob{
				{Kind: KindBGPPeer, Name: "again", Field: "spec.peerAddress", Other: other(KindBGPPeer, "first"), LeftOut: true, Err: "duplicate"},
				{Kind: KindBGPPeer, Name: "rack-1", Field: "spec.peerAddress", Other: other(KindBGPPeer, "zone-a"), LeftOut: true, Err: "duplicate"},
				{Kind: KindBGPPeer, Name: "first", Field: "metadata.name", Other: other(KindBGPPeer, "first"), LeftOut: true, Err: "duplicate"},
			},
		},
		{
			name: "peer password secrets",
			in: Resources{
				Secrets: map[string]corev1.Secret{
					ns + "/good":   basicAuth("good", "s3cret-value"),
					ns + "/nokey":  {ObjectMeta: metav1.ObjectMeta{Name: "nokey", Namespace: ns}, Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"username": []byte("s3cret-value")}},
					ns + "/opaque": {ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: ns}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("s3cret-value")}},
				},
				Peers: []v1beta2.BGPPeer{
					peer("good", 0, func(s *v1beta2.BGPPeerSpec) { s.PasswordSecret.Name = "good" }),
					peer("missing", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2"; s.PasswordSecret.Name = "nope" }),
					peer("nokey", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.3"; s.PasswordSecret.Name = "nokey" }),
					peer("opaque", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.4"; s.PasswordSecret.Name = "opaque" }),
					peer("both", 0, func(s *v1beta2.BGPPeerSpec) {
						s.Address = "172.25.254.5"
						s.PasswordSecret.Name = "good"
						s.Password = "s3cret-value"
					}),
				},
			},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}, Peers: []string{"good"}},
			probs: []prob{
				{Kind: KindBGPPeer, Name: "both", Field: "spec.passwordSecret", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "missing", Field: "spec.passwordSecret", Other: "Secret " + ns + "/nope", LeftOut: true, Err: "secret"},
				{Kind: KindBGPPeer, Name: "nokey", Field: "spec.passwordSecret", Other: "Secret " + ns + "/nokey", LeftOut: true, Err: "secret"},
				{Kind: KindBGPPeer, Name: "opaque", Field: "spec.passwordSecret", Other: "Secret " + ns + "/opaque", LeftOut: true, Err: "secret"},
			},
		},
		{
			name: "peer in-object checks",
			in: Resources{Peers: []v1beta2.BGPPeer{
				peer("no-myasn", 0, func(s *v1beta2.BGPPeerSpec) { s.MyASN = 0 }),
				peer("no-asn", 0, func(s *v1beta2.BGPPeerSpec) { s.ASN = 0 }),
				peer("asn-and-dynamic", 0, func(s *v1beta2.BGPPeerSpec) { s.DynamicASN = v1beta2.ExternalASNMode }),
				peer("bad-dynamic", 0, func(s *v1beta2.BGPPeerSpec) { s.ASN = 0; s.DynamicASN = "sideways" }),
				peer("ibgp-multihop", 0, func(s *v1beta2.BGPPeerSpec) { s.ASN = s.MyASN; s.EBGPMultiHop = true }),
				peer("addr-and-iface", 0, func(s *v1beta2.BGPPeerSpec) { s.Interface = "eth0" }),
				peer("no-addr", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "" }),
				peer("bad-addr", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.300" }),
				peer("bad-router-id", 0, func(s *v1beta2.BGPPeerSpec) { s.RouterID = "fd01::1" }),
				peer("short-hold", 0, func(s *v1beta2.BGPPeerSpec) { s.HoldTime = &metav1.Duration{Duration: 2 * time.Second} }),
				peer("keepalive-over-hold", 0, func(s *v1beta2.BGPPeerSpec) {
					s.HoldTime = &metav1.Duration{Duration: 9 * time.Second}
					s.KeepaliveTime = &metav1.Duration{Duration: 10 * time.Second}
				}),
				peer("bad-connect", 0, func(s *v1beta2.BGPPeerSpec) { s.ConnectTime = &metav1.Duration{Duration: time.Millisecond} }),
				peer("newline-password", 0, func(s *v1beta2.BGPPeerSpec) { s.Password = "a\nb" }),
			}},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{
				{Kind: KindBGPPeer, Name: "addr-and-iface", Field: "spec.interface", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "asn-and-dynamic", Field: "spec.dynamicASN", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "bad-addr", Field: "spec.peerAddress", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "bad-connect", Field: "spec.connectTime", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "bad-dynamic", Field: "spec.dynamicASN", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "bad-router-id", Field: "spec.routerID", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "ibgp-multihop", Field: "spec.ebgpMultiHop", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "keepalive-over-hold", Field: "spec.keepaliveTime", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "newline-password", Field: "spec.password", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "no-addr", Field: "spec.peerAddress", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "no-asn", Field: "spec.peerASN", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "no-myasn", Field: "spec.myASN", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPPeer, Name: "short-hold", Field: "spec.holdTime", LeftOut: true, Err: "invalid"},
			},
		},
		{
			name: "BFD profiles: out of range and duplicate names are left out",
			in: Resources{BFDProfiles: []v1beta1.BFDProfile{
				bfd("ok", 0, nil),
				bfd("slow-rx", 0, func(s *v1beta1.BFDProfileSpec) { s.ReceiveInterval = ptr.To[uint32](60001) }),
				bfd("mult", 0, func(s *v1beta1.BFDProfileSpec) { s.DetectMultiplier = ptr.To[uint32](1) }),
				withBFDNamespace(bfd("ok", 1, nil), "other"),
			}},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}, BFD: []string{"ok"}},
			probs: []prob{
				{Kind: KindBFDProfile, Name: "mult", Field: "spec.detectMultiplier", LeftOut: true, Err: "invalid"},
				{Kind: KindBFDProfile, Name: "slow-rx", Field: "spec.receiveInterval", LeftOut: true, Err: "invalid"},
				{Kind: KindBFDProfile, Name: "ok", Field: "metadata.name", Other: other(KindBFDProfile, "ok"), LeftOut: true, Err: "duplicate"},
			},
		},
		{
			name: "aggregation length shorter than a pool's prefix drops that pool only",
			in: Resources{
				Pools: []v1beta1.IPAddressPool{pool("wide", 0, "10.1.0.0/16"), pool("narrow", 0, "10.2.0.0/28"), pool("v6", 0, "fd01::/120")},
				BGPAdvs: []v1beta1.BGPAdvertisement{bgpAdv("agg", 0, func(s *v1beta1.BGPAdvertisementSpec) {
					s.AggregationLength = ptr.To[int32](24)
					s.AggregationLengthV6 = ptr.To[int32](112)
				})},
			},
			want: summary{Pools: []string{"narrow", "v6", "wide"}, L2: map[string][]string{}, BGP: map[string][]string{"agg": {"wide"}}},
			probs: []prob{
				{Kind: KindBGPAdvertisement, Name: "agg", Field: "spec.aggregationLength", Other: other(KindIPAddressPool, "narrow"), Err: "incompatible"},
				{Kind: KindBGPAdvertisement, Name: "agg", Field: "spec.aggregationLengthV6", Other: other(KindIPAddressPool, "v6"), Err: "incompatible"},
			},
		},
		{
			name: "two advertisements giving one route two local preferences: the newer is left out",
			in: Resources{
				Pools: []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24"), pool("b", 0, "10.2.0.0/24")},
				BGPAdvs: []v1beta1.BGPAdvertisement{
					bgpAdv("first", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.LocalPref = 100 }),
					bgpAdv("same-pref", 1, func(s *v1beta1.BGPAdvertisementSpec) { s.LocalPref = 100 }),
					bgpAdv("other-pool", 2, func(s *v1beta1.BGPAdvertisementSpec) { s.LocalPref = 50; s.IPAddressPools = []string{"b"} }),
					bgpAdv("other-agg", 3, func(s *v1beta1.BGPAdvertisementSpec) { s.LocalPref = 60; s.AggregationLength = ptr.To[int32](24) }),
					bgpAdv("other-nodes", 4, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 70
						s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"zone": "b"})}
					}),
					bgpAdv("service-selected", 5, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 80
						s.ServiceSelectors = []metav1.LabelSelector{sel(map[string]string{"app": "x"})}
					}),
					bgpAdv("clash", 6, func(s *v1beta1.BGPAdvertisementSpec) { s.LocalPref = 200; s.IPAddressPools = []string{"a"} }),
				},
			},
			want: summary{Pools: []string{"a", "b"}, L2: map[string][]string{}, BGP: map[string][]string{
				"first": {"a", "b"}, "same-pref": {"a", "b"}, "other-agg": {"a", "b"}, "service-selected": {"a", "b"},
				// other-pool and other-nodes clash with first too: first covers b,
				// and its empty nodeSelectors cover zone b.
			}},
			probs: []prob{
				{Kind: KindBGPAdvertisement, Name: "other-pool", Field: "spec.localPref", Other: other(KindBGPAdvertisement, "first"), LeftOut: true, Err: "incompatible"},
				{Kind: KindBGPAdvertisement, Name: "other-nodes", Field: "spec.localPref", Other: other(KindBGPAdvertisement, "first"), LeftOut: true, Err: "incompatible"},
				{Kind: KindBGPAdvertisement, Name: "clash", Field: "spec.localPref", Other: other(KindBGPAdvertisement, "first"), LeftOut: true, Err: "incompatible"},
			},
		},
		{
			name: "local preferences may differ for disjoint pools, nodes or peers",
			in: Resources{
				Pools: []v1beta1.IPAddressPool{pool("a", 0, "10.1.0.0/24"), pool("b", 0, "10.2.0.0/24")},
				BGPAdvs: []v1beta1.BGPAdvertisement{
					bgpAdv("a-zone-a", 0, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 100
						s.IPAddressPools = []string{"a"}
						s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"zone": "a"})}
					}),
					bgpAdv("a-zone-b", 1, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 200
						s.IPAddressPools = []string{"a"}
						s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"zone": "b"})}
					}),
					bgpAdv("b-peer1", 2, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 100
						s.IPAddressPools = []string{"b"}
						s.Peers = []string{"p1"}
					}),
					bgpAdv("b-peer2", 3, func(s *v1beta1.BGPAdvertisementSpec) {
						s.LocalPref = 200
						s.IPAddressPools = []string{"b"}
						s.Peers = []string{"p2"}
					}),
				},
				Peers: []v1beta2.BGPPeer{peer("p1", 0, nil), peer("p2", 0, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" })},
			},
			want: summary{Pools: []string{"a", "b"}, L2: map[string][]string{}, Peers: []string{"p1", "p2"}, BGP: map[string][]string{
				"a-zone-a": {"a"}, "a-zone-b": {"a"}, "b-peer1": {"b"}, "b-peer2": {"b"},
			}},
		},
		{
			name: "BGP advertisement in-object checks",
			in: Resources{BGPAdvs: []v1beta1.BGPAdvertisement{
				bgpAdv("len33", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptr.To[int32](33) }),
				bgpAdv("len129", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.AggregationLengthV6 = ptr.To[int32](129) }),
				bgpAdv("agg-and-selector", 0, func(s *v1beta1.BGPAdvertisementSpec) {
					s.AggregationLength = ptr.To[int32](24)
					s.ServiceSelectors = []metav1.LabelSelector{sel(map[string]string{"app": "x"})}
				}),
			}},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{
				{Kind: KindBGPAdvertisement, Name: "agg-and-selector", Field: "spec.aggregationLength", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPAdvertisement, Name: "len129", Field: "spec.aggregationLengthV6", LeftOut: true, Err: "invalid"},
				{Kind: KindBGPAdvertisement, Name: "len33", Field: "spec.aggregationLength", LeftOut: true, Err: "invalid"},
			},
		},
		{
			name: "BGP advertisement naming a missing peer keeps the name",
			in: Resources{
				Peers:   []v1beta2.BGPPeer{peer("p1", 0, nil)},
				BGPAdvs: []v1beta1.BGPAdvertisement{bgpAdv("adv", 0, func(s *v1beta1.BGPAdvertisementSpec) { s.Peers = []string{"p1", "p2"} })},
			},
			want:  summary{L2: map[string][]string{}, BGP: map[string][]string{"adv": nil}, Peers: []string{"p1"}},
			probs: []prob{{Kind: KindBGPAdvertisement, Name: "adv", Field: "spec.peers[1]", Other: "BGPPeer p2", Dangling: true, Err: "missing"}},
		},
		{
			name: "L2 advertisement with a bad interface or selector is left out",
			in: Resources{L2Advs: []v1beta1.L2Advertisement{
				l2("iface", 0, func(s *v1beta1.L2AdvertisementSpec) { s.Interfaces = []string{"eth0", "has space"} }),
				l2("nodesel", 0, func(s *v1beta1.L2AdvertisementSpec) {
					s.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"bad key!": "x"}}}
				}),
			}},
			want: summary{L2: map[string][]string{}, BGP: map[string][]string{}},
			probs: []prob{
				{Kind: KindL2Advertisement, Name: "iface", Field: "spec.interfaces[1]", LeftOut: true, Err: "invalid"},
				{Kind: KindL2Advertisement, Name: "nodesel", Field: "spec.nodeSelectors[0]", LeftOut: true, Err: "invalid"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ps := Resolve(tc.in)
			if diff := cmp.Diff(tc.want, summarize(cfg)); diff != "" {
				t.Errorf("Resolve config (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.probs, probs(ps)); diff != "" {
				t.Errorf("Resolve problems (-want +got):\n%s\nmessages:\n%s", diff, messages(ps))
			}
			for _, p := range ps {
				if strings.Contains(p.Message, "s3cret-value") || strings.Contains(p.Err.Error(), "s3cret-value") {
					t.Errorf("problem message reveals a password: %s", p.Message)
				}
				prefix := p.Kind + " " + ns + "/" + p.Name + ": " + p.Field
				if !strings.HasPrefix(p.Message, prefix) && !strings.HasPrefix(p.Message, p.Kind+" other/"+p.Name+": "+p.Field) {
					t.Errorf("problem message %q does not start with %q", p.Message, prefix)
				}
				if p.Other != "" && !strings.Contains(p.Message, p.Other) {
					t.Errorf("problem message %q does not name %q", p.Message, p.Other)
				}
			}
		})
	}
}

func withBFDNamespace(b v1beta1.BFDProfile, namespace string) v1beta1.BFDProfile {
	b.Namespace = namespace
	return b
}

func messages(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.Message + "\n")
	}
	return b.String()
}

func TestResolveOverlapMessage(t *testing.T) {
	_, ps := Resolve(Resources{Pools: []v1beta1.IPAddressPool{pool("a", 0, "10.0.0.0/16"), pool("b", 1, "10.0.0.0/24")}})
	want := `IPAddressPool metallb-system/b: spec.addresses[0] "10.0.0.0/24" overlaps IPAddressPool metallb-system/a (its spec.addresses[0] "10.0.0.0/16"); left out of the configuration`
	if len(ps) != 1 || ps[0].Message != want {
		t.Fatalf("Resolve problems = %q, want one: %q", messages(ps), want)
	}
	if !errors.Is(ps[0], ErrOverlap) {
		t.Errorf("errors.Is(%v, ErrOverlap) = false", ps[0])
	}
}

// TestResolveDetails pins the resolved values of one full, valid config.
func TestResolveDetails(t *testing.T) {
	in := Resources{
		Pools: []v1beta1.IPAddressPool{
			withPool(pool("a", 0, "10.1.0.7/24", "10.2.0.0 - 10.2.0.255"), func(p *v1beta1.IPAddressPool) {
				p.Spec.AutoAssign = ptr.To(false)
				p.Spec.AvoidBuggyIPs = true
				p.Spec.AllocateTo = &v1beta1.ServiceAllocation{
					Priority:           5,
					Namespaces:         []string{"web", "api"},
					NamespaceSelectors: []metav1.LabelSelector{sel(map[string]string{"team": "red"})},
				}
			}),
		},
		Namespaces: []corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "red1", Labels: map[string]string{"team": "red"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "blue", Labels: map[string]string{"team": "blue"}}},
		},
		Communities: []v1beta1.Community{community("c", 0, "no-adv", "65535:65282", "big", "large:1:2:3")},
		BFDProfiles: []v1beta1.BFDProfile{bfd("fast", 0, func(s *v1beta1.BFDProfileSpec) { s.ReceiveInterval = ptr.To[uint32](50); s.EchoMode = ptr.To(true) })},
		Secrets:     map[string]corev1.Secret{ns + "/pw": basicAuth("pw", "hunter2")},
		Peers: []v1beta2.BGPPeer{peer("tor", 0, func(s *v1beta2.BGPPeerSpec) {
			s.Address = "::ffff:172.25.254.1"
			s.KeepaliveTime = &metav1.Duration{Duration: 20 * time.Second}
			s.BFDProfile = "fast"
			s.PasswordSecret = corev1.SecretReference{Name: "pw"}
			s.NodeSelectors = []metav1.LabelSelector{sel(map[string]string{"rack": "1"})}
		})},
		BGPAdvs: []v1beta1.BGPAdvertisement{bgpAdv("adv", 0, func(s *v1beta1.BGPAdvertisementSpec) {
			s.Communities = []string{"big", "no-adv", "65535:65282"}
			s.LocalPref = 100
			s.AggregationLength = ptr.To[int32](24)
			s.Peers = []string{"tor"}
		})},
		L2Advs: []v1beta1.L2Advertisement{l2("l2", 0, func(s *v1beta1.L2AdvertisementSpec) { s.Interfaces = []string{"eth1", "eth0"} })},
	}
	cfg, ps := Resolve(in)
	if len(ps) != 0 {
		t.Fatalf("Resolve problems:\n%s", messages(ps))
	}
	selString := func(ss []labels.Selector) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.String())
		}
		return out
	}
	opts := cmp.Options{
		cmp.Comparer(func(a, b netipx.IPRange) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Transformer("selectors", selString),
	}
	wantPool := &Pool{
		Name: "a", Namespace: ns,
		Addresses:            []string{"10.1.0.7/24", "10.2.0.0 - 10.2.0.255"},
		Ranges:               []netipx.IPRange{netipx.MustParseIPRange("10.1.0.0-10.1.0.255"), netipx.MustParseIPRange("10.2.0.0-10.2.0.255")},
		AutoAssign:           false,
		AvoidBuggyIPs:        true,
		HasServiceAllocation: true,
		Priority:             5, HasPriority: true,
		Namespaces:         []string{"api", "web"},
		NamespaceSelectors: []labels.Selector{labels.SelectorFromSet(labels.Set{"team": "red"})},
		SelectedNamespaces: []string{"red1"},
	}
	if diff := cmp.Diff(wantPool, cfg.Pools["a"], opts); diff != "" {
		t.Errorf("pool (-want +got):\n%s", diff)
	}
	wantPeer := []Peer{{
		Name: "tor", Namespace: ns, MyASN: 64500, ASN: 64501,
		Address:  netip.MustParseAddr("172.25.254.1"),
		Port:     179,
		HoldTime: 60 * time.Second, KeepaliveTime: 20 * time.Second,
		NodeSelectors: []labels.Selector{labels.SelectorFromSet(labels.Set{"rack": "1"})},
		Password:      "hunter2",
		BFDProfile:    "fast",
	}}
	if diff := cmp.Diff(wantPeer, cfg.Peers, opts); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	wantBFD := map[string]BFDProfile{"fast": {Name: "fast", ReceiveInterval: 50, TransmitInterval: 300, DetectMultiplier: 3, EchoInterval: 50, EchoMode: true, MinimumTTL: 254}}
	if diff := cmp.Diff(wantBFD, cfg.BFDProfiles); diff != "" {
		t.Errorf("BFD profiles (-want +got):\n%s", diff)
	}
	wantBGP := []BGPAdvertisement{{
		Name: "adv", Namespace: ns, Pools: []string{"a"},
		AggregationLength: 24, AggregationLengthV6: 128, LocalPref: 100,
		Communities: []Community{{Standard: 0xffffff02}, {Large: true, Parts: [3]uint32{1, 2, 3}}},
		Peers:       []string{"tor"},
	}}
	if diff := cmp.Diff(wantBGP, cfg.BGPAdvertisements, opts); diff != "" {
		t.Errorf("BGP advertisements (-want +got):\n%s", diff)
	}
	wantL2 := []L2Advertisement{{Name: "l2", Namespace: ns, Pools: []string{"a"}, Interfaces: []string{"eth0", "eth1"}}}
	if diff := cmp.Diff(wantL2, cfg.L2Advertisements, opts); diff != "" {
		t.Errorf("L2 advertisements (-want +got):\n%s", diff)
	}
}

// goodResources is a valid configuration touching every kind.
func goodResources() Resources {
	return Resources{
		Pools: []v1beta1.IPAddressPool{
			pool("p1", 0, "10.1.0.0/24"),
			withPool(pool("p2", 1, "10.2.0.1-10.2.0.50", "fd01::/120"), func(p *v1beta1.IPAddressPool) { p.Labels = map[string]string{"bgp": "yes"} }),
		},
		L2Advs:      []v1beta1.L2Advertisement{l2("l2", 0, func(s *v1beta1.L2AdvertisementSpec) { s.IPAddressPools = []string{"p1"} })},
		Communities: []v1beta1.Community{community("c", 0, "gold", "65000:1")},
		BFDProfiles: []v1beta1.BFDProfile{bfd("fast", 0, nil)},
		Secrets:     map[string]corev1.Secret{ns + "/pw": basicAuth("pw", "pw")},
		Peers: []v1beta2.BGPPeer{peer("tor", 0, func(s *v1beta2.BGPPeerSpec) {
			s.BFDProfile = "fast"
			s.PasswordSecret.Name = "pw"
		})},
		BGPAdvs: []v1beta1.BGPAdvertisement{bgpAdv("bgp", 0, func(s *v1beta1.BGPAdvertisementSpec) {
			s.IPAddressPoolSelectors = []metav1.LabelSelector{sel(map[string]string{"bgp": "yes"})}
			s.Communities = []string{"gold"}
			s.Peers = []string{"tor"}
		})},
	}
}

// TestBadObjectNeverDisturbsGoodOnes adds, one at a time, a newer bad object
// of each kind to a good configuration: the resolved config must stay
// exactly what the good configuration alone gives, and the problem must
// name the bad object.
func TestBadObjectNeverDisturbsGoodOnes(t *testing.T) {
	want, ps := Resolve(goodResources())
	if len(ps) != 0 {
		t.Fatalf("good resources have problems:\n%s", messages(ps))
	}
	bad := []struct {
		name string
		add  func(*Resources)
	}{
		{"overlapping pool", func(r *Resources) { r.Pools = append(r.Pools, pool("bad", 9, "10.1.0.128/25")) }},
		{"pool reusing a name", func(r *Resources) {
			r.Pools = append(r.Pools, withPool(pool("p1", 9, "10.9.0.0/24"), func(p *v1beta1.IPAddressPool) { p.Namespace = "x" }))
		}},
		{"unparsable pool", func(r *Resources) { r.Pools = append(r.Pools, pool("bad", 9, "nonsense")) }},
		{"community redefining an alias", func(r *Resources) { r.Communities = append(r.Communities, community("bad", 9, "gold", "65000:2")) }},
		{"invalid community", func(r *Resources) { r.Communities = append(r.Communities, community("bad", 9, "x", "1:2:3")) }},
		{"duplicate BFD profile", func(r *Resources) { r.BFDProfiles = append(r.BFDProfiles, withBFDNamespace(bfd("fast", 9, nil), "x")) }},
		{"duplicate peer session", func(r *Resources) { r.Peers = append(r.Peers, peer("bad", 9, nil)) }},
		{"peer reusing a name", func(r *Resources) {
			r.Peers = append(r.Peers, peer("tor", 9, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.77" }))
		}},
		{"peer with missing BFD profile", func(r *Resources) {
			r.Peers = append(r.Peers, peer("bad", 9, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.77"; s.BFDProfile = "nope" }))
		}},
		{"peer with missing secret", func(r *Resources) {
			r.Peers = append(r.Peers, peer("bad", 9, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.77"; s.PasswordSecret.Name = "nope" }))
		}},
		{"advertisement with unknown alias", func(r *Resources) {
			r.BGPAdvs = append(r.BGPAdvs, bgpAdv("bad", 9, func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"platinum"} }))
		}},
		{"L2 advertisement with bad selector", func(r *Resources) {
			r.L2Advs = append(r.L2Advs, l2("bad", 9, func(s *v1beta1.L2AdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"-": "x"}}}
			}))
		}},
	}
	opts := cmp.Options{
		cmp.Comparer(func(a, b netipx.IPRange) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b labels.Selector) bool { return a.String() == b.String() }),
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			r := goodResources()
			b.add(&r)
			got, ps := Resolve(r)
			if diff := cmp.Diff(want, got, opts); diff != "" {
				t.Errorf("config changed by a bad object (-want +got):\n%s", diff)
			}
			if len(ps) != 1 || !ps[0].LeftOut || (ps[0].Name != "bad" && ps[0].Namespace != "x" && ps[0].Name != "tor") {
				t.Errorf("problems = %s, want one naming the bad object, left out", messages(ps))
			}
		})
	}
}

// TestResolveIgnoresInputOrder shuffles every list: the Config and the
// Problems must not change.
func TestResolveIgnoresInputOrder(t *testing.T) {
	r := goodResources()
	r.Pools = append(r.Pools, pool("late", 5, "10.1.0.0/16"), pool("c", 2, "10.3.0.0/24"), pool("d", 2, "10.3.0.128/25"))
	r.Peers = append(r.Peers, peer("again", 4, nil), peer("other", 1, func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.8" }))
	r.L2Advs = append(r.L2Advs, l2("l2b", 3, nil), l2("l2c", 3, func(s *v1beta1.L2AdvertisementSpec) { s.IPAddressPools = []string{"late", "d"} }))
	want, wantProbs := Resolve(r)
	opts := cmp.Options{
		cmp.Comparer(func(a, b netipx.IPRange) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b labels.Selector) bool { return a.String() == b.String() }),
		cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() }),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		s := r
		s.Pools = shuffled(rng, r.Pools)
		s.Peers = shuffled(rng, r.Peers)
		s.L2Advs = shuffled(rng, r.L2Advs)
		got, gotProbs := Resolve(s)
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Fatalf("shuffle %d: config differs (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(wantProbs, gotProbs, opts); diff != "" {
			t.Fatalf("shuffle %d: problems differ (-want +got):\n%s", i, diff)
		}
	}
	if len(wantProbs) != 5 {
		t.Errorf("want 5 problems (pools late and d, peer again, l2c naming both pools), got:\n%s", messages(wantProbs))
	}
}

func shuffled[T any](rng *rand.Rand, in []T) []T {
	out := slices.Clone(in)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// An old pool edited to overlap a newer one is the object that introduced
// the conflict: it is left out, and the newer pool (with its Services)
// stays. Status writes do not count as edits.
func TestEditedPoolIntroducesOverlap(t *testing.T) {
	edited := func(p v1beta1.IPAddressPool, minutes int, subresource string) v1beta1.IPAddressPool {
		at := metav1.NewTime(t0.Add(time.Duration(minutes) * time.Minute))
		p.ManagedFields = append(p.ManagedFields, metav1.ManagedFieldsEntry{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate, Time: &at, Subresource: subresource})
		return p
	}
	old := edited(pool("old", 0, "10.0.0.0/23"), 30, "")
	newer := edited(pool("newer", 10, "10.0.1.0/24"), 40, "status")
	cfg, ps := Resolve(Resources{Pools: []v1beta1.IPAddressPool{newer, old}})
	if _, ok := cfg.Pools["newer"]; !ok || len(cfg.Pools) != 1 {
		t.Fatalf("Resolve kept pools %v, want only newer", slices.Sorted(maps.Keys(cfg.Pools)))
	}
	if len(ps) != 1 || ps[0].Name != "old" || !errors.Is(ps[0], ErrOverlap) {
		t.Fatalf("problems = %v, want one overlap naming old", ps)
	}
}

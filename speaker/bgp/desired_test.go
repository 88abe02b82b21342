package bgp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/internal/policy"
)

// The objects below are what a user applies; every test goes through
// policy.Resolve so that it exercises the real resolution.

const crNamespace = "metallb-system"

func crMeta(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: crNamespace, Labels: labels}
}

func crPool(name string, labels map[string]string, addrs ...string) v1beta1.IPAddressPool {
	return v1beta1.IPAddressPool{ObjectMeta: crMeta(name, labels), Spec: v1beta1.IPAddressPoolSpec{Addresses: addrs}}
}

// crPeer is an eBGP peer at the lab router unless f changes it.
func crPeer(name string, f func(*v1beta2.BGPPeerSpec)) v1beta2.BGPPeer {
	p := v1beta2.BGPPeer{ObjectMeta: crMeta(name, nil), Spec: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64500, Address: "172.25.254.1"}}
	if f != nil {
		f(&p.Spec)
	}
	return p
}

func crAdv(name string, f func(*v1beta1.BGPAdvertisementSpec)) v1beta1.BGPAdvertisement {
	a := v1beta1.BGPAdvertisement{ObjectMeta: crMeta(name, nil)}
	if f != nil {
		f(&a.Spec)
	}
	return a
}

func crSelector(kv ...string) metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return metav1.LabelSelector{MatchLabels: m}
}

// resolve fails the test when an object the test relies on is left out.
func resolve(t testing.TB, r policy.Resources) policy.Config {
	t.Helper()
	cfg, problems := policy.Resolve(r)
	for _, p := range problems {
		if p.LeftOut {
			t.Fatalf("Resolve left out an object: %v", p)
		}
		t.Logf("Resolve: %v", p)
	}
	return cfg
}

var (
	// nodeA is dual-stack in rack a, nodeB IPv4-only in rack b, nodeC
	// IPv6-only in rack c.
	nodeA = Node{Name: "node-a", Labels: map[string]string{"rack": "a", "bgp": "yes"},
		Addresses: []netip.Addr{netip.MustParseAddr("172.25.254.11"), netip.MustParseAddr("fd00:254::11")}}
	nodeB = Node{Name: "node-b", Labels: map[string]string{"rack": "b"},
		Addresses: []netip.Addr{netip.MustParseAddr("172.25.254.12")}}
	nodeC = Node{Name: "node-c", Labels: map[string]string{"rack": "c"},
		Addresses: []netip.Addr{netip.MustParseAddr("fd00:254::13")}}

	routerV4 = netip.MustParseAddr("172.25.254.1")
	routerV6 = netip.MustParseAddr("fd00:254::1")
)

var desiredCmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmpopts.EquateEmpty(),
	cmpopts.EquateErrors(),
}

// peerErr is a PeerError without its Reason, which is prose for users
// (TestDesiredPeersErrorMessages checks the text).
type peerErr struct {
	Peer, Namespace, Field, Value string
	LeftOut                       bool
	Err                           error
}

// ebgp is the session every default crPeer gets on nodeA.
func ebgp(name string, f func(*PeerConfig)) PeerConfig {
	p := PeerConfig{
		Name: name, Address: routerV4, Port: 179, MyASN: 64512, PeerASN: 64500,
		RouterID: netip.MustParseAddr("172.25.254.11"), HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second,
	}
	if f != nil {
		f(&p)
	}
	return p
}

func peerErrors(t *testing.T, errs []error) []peerErr {
	t.Helper()
	var out []peerErr
	for _, err := range errs {
		var pe *PeerError
		if !errors.As(err, &pe) {
			t.Fatalf("DesiredPeers error %v is not a *PeerError", err)
		}
		if pe.Reason == "" {
			t.Errorf("DesiredPeers error %v gives no reason", err)
		}
		out = append(out, peerErr{pe.Peer, pe.Namespace, pe.Field, pe.Value, pe.LeftOut, pe.Err})
	}
	return out
}

func TestDesiredPeers(t *testing.T) {
	secret := corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tor-auth", Namespace: crNamespace},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"password": []byte("from-secret")},
	}
	bfd := v1beta1.BFDProfile{ObjectMeta: crMeta("fast", nil)}
	u32 := func(v uint32) *uint32 { return &v }
	on := true
	fast := v1beta1.BFDProfile{ObjectMeta: crMeta("fast", nil), Spec: v1beta1.BFDProfileSpec{
		ReceiveInterval: u32(50), TransmitInterval: u32(60), DetectMultiplier: u32(4),
	}}
	odd := v1beta1.BFDProfile{ObjectMeta: crMeta("odd", nil), Spec: v1beta1.BFDProfileSpec{
		EchoMode: &on, PassiveMode: &on, MinimumTTL: u32(250),
	}}
	defaultBFD := func(p *PeerConfig) {
		p.BFD = BFDConfig{Enabled: true, ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	}

	tests := []struct {
		name     string
		node     Node
		res      policy.Resources
		want     []PeerConfig
		wantErrs []peerErr
	}{{
		name: "defaults: port 179, router ID from the node, 90s hold, a third as keepalive",
		node: nodeA,
		res:  policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", nil)}},
		want: []PeerConfig{ebgp("tor", nil)},
	}, {
		name: "every session setting is carried over",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
			s.Port = 1179
			s.SrcAddress = "172.25.254.11"
			s.RouterID = "10.255.0.1"
			s.HoldTime = &metav1.Duration{Duration: 30 * time.Second}
			s.KeepaliveTime = &metav1.Duration{Duration: 5 * time.Second}
			s.ConnectTime = &metav1.Duration{Duration: 7 * time.Second}
			s.EBGPMultiHop = true
			s.Password = "s3cret"
		})}},
		want: []PeerConfig{ebgp("tor", func(p *PeerConfig) {
			p.Port = 1179
			p.SourceAddress = netip.MustParseAddr("172.25.254.11")
			p.RouterID = netip.MustParseAddr("10.255.0.1")
			p.HoldTime, p.KeepaliveTime, p.ConnectTime = 30*time.Second, 5*time.Second, 7*time.Second
			p.EBGPMultiHop = true
			p.Password = "s3cret"
		})},
	}, {
		name: "password from a basic-auth Secret",
		node: nodeA,
		res: policy.Resources{
			Peers:   []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.PasswordSecret = corev1.SecretReference{Name: "tor-auth"} })},
			Secrets: map[string]corev1.Secret{crNamespace + "/tor-auth": secret},
		},
		want: []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.Password = "from-secret" })},
	}, {
		name: "dynamic ASN internal and external",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("ibgp", func(s *v1beta2.BGPPeerSpec) { s.ASN, s.DynamicASN = 0, v1beta2.InternalASNMode }),
			crPeer("ebgp", func(s *v1beta2.BGPPeerSpec) {
				s.ASN, s.DynamicASN, s.Address = 0, v1beta2.ExternalASNMode, "172.25.254.2"
			}),
		}},
		want: []PeerConfig{
			ebgp("ebgp", func(p *PeerConfig) {
				p.PeerASN, p.DynamicASN, p.Address = 0, DynamicASNExternal, netip.MustParseAddr("172.25.254.2")
			}),
			ebgp("ibgp", func(p *PeerConfig) { p.PeerASN, p.DynamicASN = 0, DynamicASNInternal }),
		},
	}, {
		name: "nodeSelectors: only peers selecting this node",
		node: nodeB,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("rack-a", func(s *v1beta2.BGPPeerSpec) { s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "a")} }),
			crPeer("rack-b", func(s *v1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "a"), crSelector("rack", "b")}
				s.Address = "172.25.254.2"
			}),
			crPeer("everywhere", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.3" }),
		}},
		want: []PeerConfig{
			ebgp("everywhere", func(p *PeerConfig) {
				p.Address, p.RouterID = netip.MustParseAddr("172.25.254.3"), netip.MustParseAddr("172.25.254.12")
			}),
			ebgp("rack-b", func(p *PeerConfig) {
				p.Address, p.RouterID = netip.MustParseAddr("172.25.254.2"), netip.MustParseAddr("172.25.254.12")
			}),
		},
	}, {
		name: "no peer for this node",
		node: nodeC,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("rack-a", func(s *v1beta2.BGPPeerSpec) { s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "a")} }),
		}},
	}, {
		name: "timers are whole seconds; a derived keepalive is rounded down",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
			s.HoldTime = &metav1.Duration{Duration: 10 * time.Second}
		})}},
		want: []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.HoldTime, p.KeepaliveTime = 10*time.Second, 3*time.Second })},
	}, {
		name: "a sub-second keepalive becomes one second, not the default",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
			s.HoldTime = &metav1.Duration{Duration: 3 * time.Second}
			s.KeepaliveTime = &metav1.Duration{Duration: 500 * time.Millisecond}
		})}},
		want: []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.HoldTime, p.KeepaliveTime = 3*time.Second, time.Second })},
	}, {
		name: "IPv6 session keeps the IPv4 router ID",
		node: nodeA,
		res:  policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address = "fd00:254::1" })}},
		want: []PeerConfig{ebgp("tor6", func(p *PeerConfig) { p.Address = routerV6 })},
	}, {
		name: "dual stack: the other family's next hop is the node's address of that family",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.DualStackAddressFamily = true }),
			crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address, s.DualStackAddressFamily = "fd00:254::1", true }),
		}},
		want: []PeerConfig{
			ebgp("tor", func(p *PeerConfig) { p.DualStack, p.NextHopIPv6 = true, netip.MustParseAddr("fd00:254::11") }),
			ebgp("tor6", func(p *PeerConfig) {
				p.Address, p.DualStack, p.NextHopIPv4 = routerV6, true, netip.MustParseAddr("172.25.254.11")
			}),
		},
	}, {
		name:     "dual stack on a node without the other family: own family only, reported",
		node:     nodeB,
		res:      policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.DualStackAddressFamily = true })}},
		want:     []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.RouterID = netip.MustParseAddr("172.25.254.12") })},
		wantErrs: []peerErr{{Peer: "tor", Namespace: crNamespace, Field: "spec.dualStackAddressFamily", Value: "true", Err: ErrUnsupported}},
	}, {
		name: "vrf: peer left out",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("red", func(s *v1beta2.BGPPeerSpec) { s.VRFName = "red" }),
			crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" }),
		}},
		want:     []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.Address = netip.MustParseAddr("172.25.254.2") })},
		wantErrs: []peerErr{{Peer: "red", Namespace: crNamespace, Field: "spec.vrf", Value: "red", LeftOut: true, Err: ErrUnsupported}},
	}, {
		name: "unnumbered (interface): peer left out",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("unnumbered", func(s *v1beta2.BGPPeerSpec) { s.Address, s.Interface = "", "eth1" }),
		}},
		wantErrs: []peerErr{{Peer: "unnumbered", Namespace: crNamespace, Field: "spec.interface", Value: "eth1", LeftOut: true, Err: ErrUnsupported}},
	}, {
		name: "bfdProfile with defaults (300 ms x 3); graceful restart reported",
		node: nodeA,
		res: policy.Resources{
			BFDProfiles: []v1beta1.BFDProfile{bfd},
			Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
				s.BFDProfile = "fast"
				s.EnableGracefulRestart = true
			})},
		},
		want: []PeerConfig{ebgp("tor", defaultBFD)},
		wantErrs: []peerErr{
			{Peer: "tor", Namespace: crNamespace, Field: "spec.enableGracefulRestart", Value: "true", Err: ErrUnsupported},
		},
	}, {
		name: "bfdProfile intervals and multiplier are carried over",
		node: nodeA,
		res: policy.Resources{
			BFDProfiles: []v1beta1.BFDProfile{fast},
			Peers:       []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "fast" })},
		},
		want: []PeerConfig{ebgp("tor", func(p *PeerConfig) {
			p.BFD = BFDConfig{Enabled: true, ReceiveInterval: 50 * time.Millisecond, TransmitInterval: 60 * time.Millisecond, DetectMultiplier: 4}
		})},
	}, {
		name: "bfdProfile echo, passive and minimumTtl: BFD configured without them, each reported",
		node: nodeA,
		res: policy.Resources{
			BFDProfiles: []v1beta1.BFDProfile{odd},
			Peers:       []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.BFDProfile = "odd" })},
		},
		want: []PeerConfig{ebgp("tor", defaultBFD)},
		wantErrs: []peerErr{
			{Peer: "tor", Namespace: crNamespace, Field: "BFDProfile odd spec.echoMode", Value: "true", Err: ErrUnsupported},
			{Peer: "tor", Namespace: crNamespace, Field: "BFDProfile odd spec.minimumTtl", Value: "250", Err: ErrUnsupported},
			{Peer: "tor", Namespace: crNamespace, Field: "BFDProfile odd spec.passiveMode", Value: "true", Err: ErrUnsupported},
		},
	}, {
		name: "bfdProfile on an ebgpMultiHop peer: session configured without BFD, reported",
		node: nodeA,
		res: policy.Resources{
			BFDProfiles: []v1beta1.BFDProfile{fast},
			Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
				s.BFDProfile, s.EBGPMultiHop = "fast", true
			})},
		},
		want:     []PeerConfig{ebgp("tor", func(p *PeerConfig) { p.EBGPMultiHop = true })},
		wantErrs: []peerErr{{Peer: "tor", Namespace: crNamespace, Field: "spec.bfdProfile", Value: "fast", Err: ErrUnsupported}},
	}, {
		name: "hold time 0 (no keepalives): configured with the default, reported",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
			s.HoldTime = &metav1.Duration{}
		})}},
		want:     []PeerConfig{ebgp("tor", nil)},
		wantErrs: []peerErr{{Peer: "tor", Namespace: crNamespace, Field: "spec.holdTime", Value: "0s", Err: ErrUnsupported}},
	}, {
		name: "routerID set by some peers and agreed: every session uses it",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("a", func(s *v1beta2.BGPPeerSpec) { s.RouterID = "10.255.0.1" }),
			crPeer("b", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" }),
			crPeer("c", func(s *v1beta2.BGPPeerSpec) { s.Address, s.RouterID = "172.25.254.3", "10.255.0.1" }),
		}},
		want: []PeerConfig{
			ebgp("a", func(p *PeerConfig) { p.RouterID = netip.MustParseAddr("10.255.0.1") }),
			ebgp("b", func(p *PeerConfig) {
				p.Address, p.RouterID = netip.MustParseAddr("172.25.254.2"), netip.MustParseAddr("10.255.0.1")
			}),
			ebgp("c", func(p *PeerConfig) {
				p.Address, p.RouterID = netip.MustParseAddr("172.25.254.3"), netip.MustParseAddr("10.255.0.1")
			}),
		},
	}, {
		name: "routerIDs that disagree: the node's address, peers asking otherwise left out",
		node: nodeA,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{
			crPeer("a", func(s *v1beta2.BGPPeerSpec) { s.RouterID = "10.255.0.1" }),
			crPeer("b", func(s *v1beta2.BGPPeerSpec) { s.Address, s.RouterID = "172.25.254.2", "10.255.0.2" }),
			crPeer("c", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.3" }),
			crPeer("d", func(s *v1beta2.BGPPeerSpec) { s.Address, s.RouterID = "172.25.254.4", "172.25.254.11" }),
		}},
		want: []PeerConfig{
			ebgp("c", func(p *PeerConfig) { p.Address = netip.MustParseAddr("172.25.254.3") }),
			ebgp("d", func(p *PeerConfig) { p.Address = netip.MustParseAddr("172.25.254.4") }),
		},
		wantErrs: []peerErr{
			{Peer: "a", Namespace: crNamespace, Field: "spec.routerID", Value: "10.255.0.1", LeftOut: true, Err: ErrUnsupported},
			{Peer: "b", Namespace: crNamespace, Field: "spec.routerID", Value: "10.255.0.2", LeftOut: true, Err: ErrUnsupported},
		},
	}, {
		name: "IPv6-only node without routerID: no router ID, peers left out",
		node: nodeC,
		res:  policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address = "fd00:254::1" })}},
		wantErrs: []peerErr{
			{Peer: "tor6", Namespace: crNamespace, Field: "spec.routerID", LeftOut: true, Err: ErrInvalid},
		},
	}, {
		name: "IPv6-only node with routerID",
		node: nodeC,
		res: policy.Resources{Peers: []v1beta2.BGPPeer{crPeer("tor6", func(s *v1beta2.BGPPeerSpec) {
			s.Address, s.RouterID = "fd00:254::1", "10.255.0.3"
		})}},
		want: []PeerConfig{ebgp("tor6", func(p *PeerConfig) { p.Address, p.RouterID = routerV6, netip.MustParseAddr("10.255.0.3") })},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := resolve(t, tc.res)
			got, errs := DesiredPeers(tc.node, cfg)
			if diff := cmp.Diff(tc.want, got, desiredCmpOpts...); diff != "" {
				t.Errorf("DesiredPeers(%s) peers (-want +got):\n%s", tc.node.Name, diff)
			}
			if diff := cmp.Diff(tc.wantErrs, peerErrors(t, errs), desiredCmpOpts...); diff != "" {
				t.Errorf("DesiredPeers(%s) errors (-want +got):\n%s", tc.node.Name, diff)
			}
		})
	}
}

// The sessions DesiredPeers returns are accepted by the speaker as they are.
func TestDesiredPeersPassSpeakerValidation(t *testing.T) {
	cfg := resolve(t, policy.Resources{Peers: []v1beta2.BGPPeer{
		crPeer("tor", func(s *v1beta2.BGPPeerSpec) {
			s.DualStackAddressFamily = true
			s.HoldTime = &metav1.Duration{Duration: 10 * time.Second}
		}),
		crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address, s.DualStackAddressFamily = "fd00:254::1", true }),
		crPeer("zero-hold", func(s *v1beta2.BGPPeerSpec) { s.Address, s.HoldTime = "172.25.254.2", &metav1.Duration{} }),
	}})
	for _, n := range []Node{nodeA, nodeB} {
		peers, _ := DesiredPeers(n, cfg)
		if len(peers) != 3 {
			t.Fatalf("DesiredPeers(%s) = %d peers, want 3", n.Name, len(peers))
		}
		for _, p := range peers {
			if err := validatePeer(p, p.RouterID); err != nil {
				t.Errorf("DesiredPeers(%s) peer %q rejected by the speaker: %v", n.Name, p.Name, err)
			}
		}
	}
}

// Users read these errors in ConfigurationState and Events: they must name
// the peer, the field and the value, and say what happened to the session.
func TestDesiredPeersErrorMessages(t *testing.T) {
	cfg := resolve(t, policy.Resources{Peers: []v1beta2.BGPPeer{
		crPeer("red", func(s *v1beta2.BGPPeerSpec) { s.VRFName = "red" }),
		crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.Address, s.EnableGracefulRestart = "172.25.254.2", true }),
	}})
	_, errs := DesiredPeers(nodeA, cfg)
	want := [][]string{
		{`peer "red"`, `spec.vrf "red"`, ErrUnsupported.Error(), "not configured on this node"},
		{`peer "tor"`, `spec.enableGracefulRestart "true"`, ErrUnsupported.Error(), "configured without it"},
	}
	if len(errs) != len(want) {
		t.Fatalf("DesiredPeers(%s) errors = %v, want %d", nodeA.Name, errs, len(want))
	}
	for i, err := range errs {
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("errors.Is(%v, ErrUnsupported) = false, want true", err)
		}
		for _, part := range want[i] {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("error %q does not contain %q", err, part)
			}
		}
	}
}

func svc(name string, eligible bool, addrs ...string) ServiceAddrs {
	s := ServiceAddrs{Service: "default/" + name, Eligible: eligible}
	for _, a := range addrs {
		s.Addresses = append(s.Addresses, netip.MustParseAddr(a))
	}
	return s
}

func withLabels(s ServiceAddrs, kv ...string) ServiceAddrs {
	s.Labels = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Labels[kv[i]] = kv[i+1]
	}
	return s
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestDesiredPaths(t *testing.T) {
	pools := []v1beta1.IPAddressPool{
		crPool("blue", map[string]string{"color": "blue"}, "10.96.1.0/24"),
		crPool("red", map[string]string{"color": "red"}, "10.96.2.0/24"),
		crPool("v6", map[string]string{"color": "blue"}, "fd00:96::/120"),
	}
	tor := crPeer("tor", nil)
	tor6 := crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address = "fd00:254::1" })
	spine := crPeer("spine", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" })
	rackB := crPeer("rack-b", func(s *v1beta2.BGPPeerSpec) {
		s.Address = "172.25.254.3"
		s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "b")}
	})
	all := crAdv("all", nil)
	communities := v1beta1.Community{ObjectMeta: crMeta("aliases", nil), Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{
		{Name: "no-export-ish", Value: "65535:65281"},
		{Name: "big", Value: "large:64512:1:2"},
	}}}

	tests := []struct {
		name     string
		node     Node
		res      policy.Resources
		services []ServiceAddrs
		want     []Path
	}{{
		name:     "one eligible address: a /32 to the node's peer",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name:     "ineligible service is not advertised (so it is withdrawn)",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("web", false, "10.96.1.10"), svc("api", true, "10.96.1.11")},
		want:     []Path{{Prefix: pfx("10.96.1.11/32"), Peers: []string{"tor"}}},
	}, {
		name:     "address in no pool is not advertised",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("stray", true, "10.97.0.1")},
	}, {
		name:     "no BGPAdvertisement: nothing",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
	}, {
		name:     "no peer on this node: nothing",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{rackB}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
	}, {
		name: "advertisement nodeSelectors: matching node advertises",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("rack-a", func(s *v1beta1.BGPAdvertisementSpec) {
				s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "a")}
			}),
		}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "advertisement nodeSelectors: other node does not",
		node: nodeB,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("rack-a", func(s *v1beta1.BGPAdvertisementSpec) {
				s.NodeSelectors = []metav1.LabelSelector{crSelector("rack", "a")}
			}),
		}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
	}, {
		name: "serviceSelectors pick services by label",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("public", func(s *v1beta1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{crSelector("exposure", "public")}
			}),
		}},
		services: []ServiceAddrs{
			withLabels(svc("web", true, "10.96.1.10"), "exposure", "public"),
			withLabels(svc("db", true, "10.96.1.11"), "exposure", "internal"),
			svc("bare", true, "10.96.1.12"),
		},
		want: []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "pool selected by name",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("red-only", func(s *v1beta1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"red"} }),
		}},
		services: []ServiceAddrs{svc("blue", true, "10.96.1.10"), svc("red", true, "10.96.2.10")},
		want:     []Path{{Prefix: pfx("10.96.2.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "pools selected by ipAddressPoolSelectors",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, tor6}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("blue", func(s *v1beta1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []metav1.LabelSelector{crSelector("color", "blue")}
			}),
		}},
		services: []ServiceAddrs{svc("blue", true, "10.96.1.10", "fd00:96::10"), svc("red", true, "10.96.2.10")},
		want: []Path{
			{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}},
			{Prefix: pfx("fd00:96::10/128"), Peers: []string{"tor6"}},
		},
	}, {
		name: "the pool is found by address; a wrong pool hint does not matter",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("red-only", func(s *v1beta1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"red"} }),
		}},
		services: []ServiceAddrs{
			func() ServiceAddrs { s := svc("stale", true, "10.96.1.10"); s.Pool = "red"; return s }(),
			func() ServiceAddrs { s := svc("right", true, "10.96.2.10"); s.Pool = "red"; return s }(),
		},
		want: []Path{{Prefix: pfx("10.96.2.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "aggregation: addresses share one prefix per length",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, tor6}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("agg", func(s *v1beta1.BGPAdvertisementSpec) {
				s.AggregationLength = ptr.To[int32](24)
				s.AggregationLengthV6 = ptr.To[int32](120)
			}),
		}},
		services: []ServiceAddrs{
			svc("a", true, "10.96.1.10"), svc("b", true, "10.96.1.200"), svc("c", true, "10.96.2.7"),
			svc("d", true, "fd00:96::1"), svc("e", true, "fd00:96::ff"),
		},
		want: []Path{
			{Prefix: pfx("10.96.1.0/24"), Peers: []string{"tor"}},
			{Prefix: pfx("10.96.2.0/24"), Peers: []string{"tor"}},
			{Prefix: pfx("fd00:96::/120"), Peers: []string{"tor6"}},
		},
	}, {
		name: "aggregate stays while one address in it is eligible",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("agg", func(s *v1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptr.To[int32](24) }),
		}},
		services: []ServiceAddrs{svc("a", false, "10.96.1.10"), svc("b", true, "10.96.1.200"), svc("c", false, "10.96.2.7")},
		want:     []Path{{Prefix: pfx("10.96.1.0/24"), Peers: []string{"tor"}}},
	}, {
		name: "aggregated and host routes side by side",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{
			all,
			crAdv("agg", func(s *v1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptr.To[int32](24) }),
		}},
		services: []ServiceAddrs{svc("a", true, "10.96.1.10")},
		want: []Path{
			{Prefix: pfx("10.96.1.0/24"), Peers: []string{"tor"}},
			{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}},
		},
	}, {
		name:     "IPv6 address goes to IPv6 sessions only; IPv4 to IPv4 ones",
		node:     nodeA,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, tor6}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("dual", true, "10.96.1.10", "fd00:96::10")},
		want: []Path{
			{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}},
			{Prefix: pfx("fd00:96::10/128"), Peers: []string{"tor6"}},
		},
	}, {
		name: "dual-stack session carries both families",
		node: nodeA,
		res: policy.Resources{Pools: pools, BGPAdvs: []v1beta1.BGPAdvertisement{all}, Peers: []v1beta2.BGPPeer{
			crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.DualStackAddressFamily = true }),
		}},
		services: []ServiceAddrs{svc("dual", true, "10.96.1.10", "fd00:96::10")},
		want: []Path{
			{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}},
			{Prefix: pfx("fd00:96::10/128"), Peers: []string{"tor"}},
		},
	}, {
		name: "dual-stack session on a node without IPv6 carries IPv4 only",
		node: nodeB,
		res: policy.Resources{Pools: pools, BGPAdvs: []v1beta1.BGPAdvertisement{all}, Peers: []v1beta2.BGPPeer{
			crPeer("tor", func(s *v1beta2.BGPPeerSpec) { s.DualStackAddressFamily = true }),
		}},
		services: []ServiceAddrs{svc("dual", true, "10.96.1.10", "fd00:96::10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "IPv4-mapped IPv6 service address is the IPv4 address",
		node: nodeA,
		res:  policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{{Service: "default/mapped", Eligible: true,
			Addresses: []netip.Addr{netip.AddrFrom16(netip.MustParseAddr("10.96.1.10").As16())}}},
		want: []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "localPref and communities: literal, large and aliases",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, Communities: []v1beta1.Community{communities},
			BGPAdvs: []v1beta1.BGPAdvertisement{crAdv("tagged", func(s *v1beta1.BGPAdvertisementSpec) {
				s.LocalPref = 150
				s.Communities = []string{"64512:100", "no-export-ish", "big", "large:64512:7:7"}
			})}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want: []Path{{
			Prefix: pfx("10.96.1.10/32"), LocalPref: 150,
			Communities:      []uint32{64512<<16 | 100, 65535<<16 | 65281},
			LargeCommunities: [][3]uint32{{64512, 1, 2}, {64512, 7, 7}},
			Peers:            []string{"tor"},
		}},
	}, {
		name: "peers named by the advertisement",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, spine}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("spine-only", func(s *v1beta1.BGPAdvertisementSpec) { s.Peers = []string{"spine"} }),
		}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"spine"}}},
	}, {
		name:     "no peers named: every peer this node has",
		node:     nodeB,
		res:      policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, spine, rackB}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"rack-b", "spine", "tor"}}},
	}, {
		name: "named peers not on this node: nothing (never an empty list meaning all)",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, rackB}, BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("rack-b-only", func(s *v1beta1.BGPAdvertisementSpec) { s.Peers = []string{"rack-b", "missing"} }),
		}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
	}, {
		name: "a peer left out on this node gets nothing",
		node: nodeA,
		res: policy.Resources{Pools: pools, BGPAdvs: []v1beta1.BGPAdvertisement{all}, Peers: []v1beta2.BGPPeer{
			tor, crPeer("red", func(s *v1beta2.BGPPeerSpec) { s.Address, s.VRFName = "172.25.254.2", "red" }),
		}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want:     []Path{{Prefix: pfx("10.96.1.10/32"), Peers: []string{"tor"}}},
	}, {
		name: "advertisements for one prefix merge: union of peers and communities, highest localPref",
		node: nodeA,
		res: policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor, spine}, Communities: []v1beta1.Community{communities},
			BGPAdvs: []v1beta1.BGPAdvertisement{
				crAdv("to-tor", func(s *v1beta1.BGPAdvertisementSpec) {
					s.Peers = []string{"tor"}
					s.LocalPref = 100
					s.Communities = []string{"64512:1", "big"}
				}),
				crAdv("to-spine", func(s *v1beta1.BGPAdvertisementSpec) {
					s.Peers = []string{"spine"}
					s.LocalPref = 200
					s.Communities = []string{"64512:2", "big"}
				}),
			}},
		services: []ServiceAddrs{svc("web", true, "10.96.1.10")},
		want: []Path{{
			Prefix: pfx("10.96.1.10/32"), LocalPref: 200,
			Communities:      []uint32{64512<<16 | 1, 64512<<16 | 2},
			LargeCommunities: [][3]uint32{{64512, 1, 2}},
			Peers:            []string{"spine", "tor"},
		}},
	}, {
		name: "shared address of two services is one path",
		node: nodeA,
		res:  policy.Resources{Pools: pools, Peers: []v1beta2.BGPPeer{tor}, BGPAdvs: []v1beta1.BGPAdvertisement{all}},
		services: []ServiceAddrs{
			svc("dns-tcp", true, "10.96.1.53"), svc("dns-udp", false, "10.96.1.53"),
		},
		want: []Path{{Prefix: pfx("10.96.1.53/32"), Peers: []string{"tor"}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := resolve(t, tc.res)
			got := DesiredPaths(tc.node, cfg, tc.services)
			if diff := cmp.Diff(tc.want, got, desiredCmpOpts...); diff != "" {
				t.Errorf("DesiredPaths(%s) (-want +got):\n%s", tc.node.Name, diff)
			}
		})
	}
}

// The result depends on the services, not on the order they are listed in.
func TestDesiredPathsOrderIndependent(t *testing.T) {
	cfg := resolve(t, policy.Resources{
		Pools: []v1beta1.IPAddressPool{crPool("blue", nil, "10.96.1.0/24", "fd00:96::/120")},
		Peers: []v1beta2.BGPPeer{
			crPeer("tor", nil), crPeer("tor6", func(s *v1beta2.BGPPeerSpec) { s.Address = "fd00:254::1" }),
			crPeer("spine", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" }),
		},
		BGPAdvs: []v1beta1.BGPAdvertisement{
			crAdv("all", func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"64512:1"} }),
			crAdv("agg", func(s *v1beta1.BGPAdvertisementSpec) {
				s.AggregationLength = ptr.To[int32](28)
				s.Peers = []string{"spine"}
				s.Communities = []string{"64512:2"}
			}),
		},
	})
	var services []ServiceAddrs
	for i := range 40 {
		services = append(services, svc(fmt.Sprint("s", i), i%3 != 0, fmt.Sprintf("10.96.1.%d", i), fmt.Sprintf("fd00:96::%x", i)))
	}
	want := DesiredPaths(nodeA, cfg, services)
	if len(want) == 0 {
		t.Fatal("DesiredPaths returned no paths; the test would prove nothing")
	}
	if !slices.IsSortedFunc(want, func(a, b Path) int { return a.Prefix.Compare(b.Prefix) }) {
		t.Errorf("DesiredPaths result is not sorted by prefix")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(services)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(want, DesiredPaths(nodeA, cfg, shuffled), desiredCmpOpts...); diff != "" {
			t.Fatalf("DesiredPaths depends on service order (-first +shuffled):\n%s", diff)
		}
	}
}

func BenchmarkDesiredPaths(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint("services=", n), func(b *testing.B) {
			cfg := resolve(b, policy.Resources{
				Pools: []v1beta1.IPAddressPool{crPool("big", nil, "10.96.0.0/16"), crPool("other", nil, "10.97.0.0/16")},
				Peers: []v1beta2.BGPPeer{
					crPeer("tor", nil), crPeer("spine", func(s *v1beta2.BGPPeerSpec) { s.Address = "172.25.254.2" }),
				},
				BGPAdvs: []v1beta1.BGPAdvertisement{
					crAdv("all", func(s *v1beta1.BGPAdvertisementSpec) { s.Communities = []string{"64512:1"} }),
					crAdv("spine", func(s *v1beta1.BGPAdvertisementSpec) {
						s.Peers = []string{"spine"}
						s.Communities = []string{"64512:2"}
					}),
				},
			})
			services := make([]ServiceAddrs, n)
			for i := range services {
				a := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
				services[i] = ServiceAddrs{Service: fmt.Sprint("default/s", i), Pool: "big", Addresses: []netip.Addr{a}, Eligible: true}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if got := DesiredPaths(nodeA, cfg, services); len(got) != n {
					b.Fatalf("DesiredPaths = %d paths, want %d", len(got), n)
				}
			}
		})
	}
}

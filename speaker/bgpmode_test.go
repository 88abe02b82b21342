package speaker

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/internal/policy"
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

// TestAdvertisedPeers: a Service's ServiceBGPStatus lists the peers of every
// path that covers one of its addresses, aggregated prefixes included.
func TestAdvertisedPeers(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	svcs := []bgp.ServiceAddrs{
		{Service: "default/web", Addresses: []netip.Addr{a("172.25.254.50"), a("fd00:254::50")}, Eligible: true},
		{Service: "default/down", Addresses: []netip.Addr{a("172.25.254.51")}, Eligible: false},
		{Service: "default/agg", Addresses: []netip.Addr{a("10.9.0.7")}, Eligible: true},
		{Service: "default/none", Addresses: []netip.Addr{a("10.8.0.1")}, Eligible: true},
	}
	paths := []bgp.Path{
		{Prefix: netip.MustParsePrefix("172.25.254.50/32"), Peers: []string{"tor-b"}},
		{Prefix: netip.MustParsePrefix("fd00:254::50/128"), Peers: []string{"tor-a", "tor-v6"}},
		{Prefix: netip.MustParsePrefix("172.25.254.51/32"), Peers: []string{"tor-a"}},
		{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Peers: []string{"tor-a"}},
	}
	want := map[string][]string{
		"default/web": {"tor-a", "tor-b", "tor-v6"},
		"default/agg": {"tor-a"},
	}
	if diff := cmp.Diff(want, advertisedPeers(svcs, paths)); diff != "" {
		t.Errorf("advertisedPeers (-want +got):\n%s", diff)
	}
}

// bgpStatus is what a user sees of a ServiceBGPStatus.
type bgpStatus struct {
	Name   string
	Labels map[string]string
	Status v1beta1.ServiceBGPStatusStatus
}

func bgpStatuses(t *testing.T, c client.Client) []bgpStatus {
	t.Helper()
	var list v1beta1.ServiceBGPStatusList
	listSystem(t, c, &list)
	var out []bgpStatus
	for _, st := range list.Items {
		out = append(out, bgpStatus{Name: st.Name, Labels: st.Labels, Status: st.Status})
	}
	return out
}

// TestSpeakerBGPStatus runs a speaker against a real API server whose
// memberlist never completes its first join: BGP needs no election, so the
// speaker advertises anyway (layer 2 stays silent), reports the Service in
// a ServiceBGPStatus with its peer and a nodeAssigned Event, exposes the
// peer's metrics, and removes the status when the endpoints go. The peer is
// a closed port: what is reported is what the speaker is configured to
// advertise, whether or not the session is up.
func TestSpeakerBGPStatus(t *testing.T) {
	env := controlplane.Start(t)
	c := env.Client
	ctx := context.Background()

	closedPort := setUpBGPNode(t, c)
	mustCreate(t, c,
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "lab"},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []string{"172.25.254.50-172.25.254.59"}}},
		&v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "bgp"},
			Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"lab"}}},
		&v1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "tor"},
			Spec: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "127.0.0.1", Port: closedPort,
				ConnectTime: &metav1.Duration{Duration: time.Second}}},
	)
	s := startSpeaker(t, env, "n1") // no member is ever alive: no first join

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	mustCreate(t, c, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.25.254.50"}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatalf("set service status: %v", err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr("n1"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
	mustCreate(t, c, slice)

	want := []bgpStatus{{
		Name:   BGPStatusName("default", "web", "n1"),
		Labels: map[string]string{LabelNode: "n1", LabelServiceName: "web", LabelServiceNamespace: "default"},
		Status: v1beta1.ServiceBGPStatusStatus{Node: "n1", ServiceName: "web", ServiceNamespace: "default", Peers: []string{"tor"}},
	}}
	eventually(t, "ServiceBGPStatus before the first join", func() string {
		return cmp.Diff(want, bgpStatuses(t, c))
	})
	eventually(t, "nodeAssigned event for bgp", func() string {
		notes, err := eventNotes(ctx, c, "default", "", ReasonNodeAssigned, "web")
		if err != nil {
			return err.Error()
		}
		return cmp.Diff([]string{`announcing from node "n1" with protocol "bgp"`}, notes)
	})
	if got, syncs := s.announcer.announced(); syncs != 0 || len(got) != 0 {
		t.Errorf("layer 2 announced %v (%d syncs) before the first join", got, syncs)
	}
	eventually(t, "bgp metrics of peer tor", func() string {
		const names = "ironlb_bgp_session_up ironlb_bgp_announced_prefixes"
		fams, err := crmetrics.Registry.Gather()
		if err != nil {
			return err.Error()
		}
		got := map[string]string{}
		for _, f := range fams {
			if !strings.Contains(names, f.GetName()) {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, lp := range m.GetLabel() {
					got[f.GetName()] += lp.GetName() + "=" + lp.GetValue() + " "
				}
				got[f.GetName()] += fmt.Sprint(m.GetGauge().GetValue())
			}
		}
		return cmp.Diff(map[string]string{"ironlb_bgp_session_up": "peer=tor 0", "ironlb_bgp_announced_prefixes": "peer=tor 0"}, got)
	})

	slice.Endpoints[0].Conditions.Ready = ptr(false)
	if err := c.Update(ctx, slice); err != nil {
		t.Fatalf("make endpoint not ready: %v", err)
	}
	eventually(t, "ServiceBGPStatus removed", func() string {
		return cmp.Diff([]bgpStatus(nil), bgpStatuses(t, c), cmpopts.EquateEmpty())
	})
}

// TestBGPModeStaysDownAfterStop: once the manager stops the BGP mode, a
// reconcile still in flight neither starts a new BGP server (which would
// advertise again) nor takes the addresses away from the forwarder, which
// keeps carrying them while it drains.
func TestBGPModeStaysDownAfterStop(t *testing.T) {
	b := newBGPMode("n1", nil, nil, logr.Discard())
	if b.NeedLeaderElection() {
		t.Error("the BGP mode waits for the first stop group: withdrawal would wait for memberlist to leave")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	<-b.started
	b.mu.Lock()
	b.last = []Announcement{{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}
	b.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	n1 := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}}}
	in := Inputs{Node: "n1", Nodes: []corev1.Node{n1}, Config: policy.Config{Peers: []policy.Peer{
		{Name: "tor", Namespace: "metallb-system", MyASN: 64512, ASN: 64513, Address: netip.MustParseAddr("127.0.0.2"), HoldTime: 90 * time.Second},
	}}}
	got, err := b.sync(context.Background(), in)
	if err != nil {
		t.Fatalf("sync after stop: %v", err)
	}
	if diff := cmp.Diff([]Announcement{{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}, got,
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("sync after stop: announcements for the forwarder (-want +got):\n%s", diff)
	}
	if b.speaker != nil {
		t.Error("sync after stop started a BGP server")
	}
}

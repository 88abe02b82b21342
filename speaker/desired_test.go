package speaker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/internal/election"
	"github.com/ironlb/ironlb/internal/policy"
)

// testConfig has pool "lab" (172.25.254.50-59, fd00:254::50-59) and pool
// "other" (10.9.0.0/24); ads are added per case.
func testConfig(ads ...policy.L2Advertisement) policy.Config {
	return policy.Config{
		Pools: map[string]*policy.Pool{
			"lab": {Name: "lab", Ranges: []netipx.IPRange{
				netipx.MustParseIPRange("172.25.254.50-172.25.254.59"),
				netipx.MustParseIPRange("fd00:254::50-fd00:254::59"),
			}},
			"other": {Name: "other", Ranges: []netipx.IPRange{netipx.MustParseIPRange("10.9.0.0-10.9.0.255")}},
		},
		L2Advertisements: ads,
	}
}

func ad(name string, pools []string, mod ...func(*policy.L2Advertisement)) policy.L2Advertisement {
	a := policy.L2Advertisement{Name: name, Namespace: "metallb-system", Pools: pools}
	for _, m := range mod {
		m(&a)
	}
	return a
}

func nodeSel(set map[string]string) func(*policy.L2Advertisement) {
	return func(a *policy.L2Advertisement) {
		a.NodeSelectors = append(a.NodeSelectors, labels.SelectorFromSet(set))
	}
}

func svcSel(set map[string]string) func(*policy.L2Advertisement) {
	return func(a *policy.L2Advertisement) {
		a.ServiceSelectors = append(a.ServiceSelectors, labels.SelectorFromSet(set))
	}
}

func ifaces(names ...string) func(*policy.L2Advertisement) {
	return func(a *policy.L2Advertisement) { a.Interfaces = names }
}

func node(name string, mod ...func(*corev1.Node)) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	for _, m := range mod {
		m(&n)
	}
	return n
}

func label(k, v string) func(*corev1.Node) {
	return func(n *corev1.Node) { n.Labels[k] = v }
}

func netUnavailable(n *corev1.Node) {
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue})
}

func service(ns, name string, ips ...string) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func local(s corev1.Service) corev1.Service {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	return s
}

// ep is an endpoint on node ("" for none) that is ready unless ready says
// otherwise; a nil ready pointer is how the API says "ready".
type ep struct {
	node  string
	ready *bool
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

func ptr[T any](v T) *T { return &v }

func slice(ns, svc string, eps ...ep) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + fmt.Sprint(len(eps)), Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, e := range eps {
		endpoint := discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.0.%d", i+1)}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.node != "" {
			endpoint.NodeName = ptr(e.node)
		}
		s.Endpoints = append(s.Endpoints, endpoint)
	}
	return s
}

var threeNodes = []corev1.Node{node("n1", label("zone", "a")), node("n2", label("zone", "b")), node("n3", label("zone", "a"))}

func winner(addr string, candidates ...string) string {
	w, _ := election.Winner(netip.MustParseAddr(addr), candidates)
	return w
}

func TestDesired(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	web := service("default", "web", "172.25.254.50")
	webReady := slice("default", "web", ep{node: "n1", ready: yes})
	tests := []struct {
		name string
		in   Inputs
		// want maps each node to what it announces; nodes not listed
		// announce nothing.
		want map[string][]Announcement
	}{
		{
			name: "the election winner among all live nodes announces",
			in:   Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
			want: map[string][]Announcement{winner("172.25.254.50", all...): {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "no endpoints, no announcement",
			in:   Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "only not-ready endpoints, no announcement",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1", ready: no}, ep{node: "n2", ready: no})}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "an endpoint without a ready condition is ready",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1"})}, Nodes: threeNodes[:1], Alive: all},
			want: map[string][]Announcement{"n1": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "endpoints of a same-named service in another namespace do not count",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{slice("other", "web", ep{node: "n1", ready: yes})}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "address outside every pool",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab", "other"})), Services: []corev1.Service{service("default", "web", "198.51.100.7")},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "pool not covered by any L2Advertisement",
			in: Inputs{Config: testConfig(ad("l2", []string{"other"})), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "serviceSelectors that do not match the service",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"}, svcSel(map[string]string{"app": "db"}))), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "serviceSelectors that match the service",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"}, svcSel(map[string]string{"app": "web"}))), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes[1:2], Alive: all},
			want: map[string][]Announcement{"n2": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "nodeSelectors pick the only node of zone b, with the advertisement's interfaces",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"}, nodeSel(map[string]string{"zone": "b"}), ifaces("eth1", "eth0"))), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
			want: map[string][]Announcement{"n2": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50"), Interfaces: []string{"eth0", "eth1"}}}},
		},
		{
			name: "nodeSelectors among several nodes elect among those only",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"}, nodeSel(map[string]string{"zone": "a"}))), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
			want: map[string][]Announcement{winner("172.25.254.50", "n1", "n3"): {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "interfaces are the union of the advertisements selecting the owner",
			in: Inputs{Config: testConfig(
				ad("a", []string{"lab"}, nodeSel(map[string]string{"zone": "a"}), ifaces("eth0")),
				ad("all", []string{"lab"}, ifaces("eth1")),
				ad("b", []string{"lab"}, nodeSel(map[string]string{"zone": "b"}), ifaces("eth2")),
			), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: []string{"n1"}},
			want: map[string][]Announcement{"n1": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50"), Interfaces: []string{"eth0", "eth1"}}}},
		},
		{
			name: "an advertisement without interfaces means every interface",
			in: Inputs{Config: testConfig(ad("a", []string{"lab"}, ifaces("eth0")), ad("b", []string{"lab"})),
				Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: []string{"n3"}},
			want: map[string][]Announcement{"n3": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "excluded nodes never announce",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady},
				Nodes: []corev1.Node{node("n1", label(ExcludeLabel, "")), node("n2", label(ExcludeLabel, "true")), node("n3")}, Alive: all},
			want: map[string][]Announcement{"n3": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "nodes with NetworkUnavailable never announce",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady},
				Nodes: []corev1.Node{node("n1", netUnavailable), node("n2"), node("n3", netUnavailable)}, Alive: all},
			want: map[string][]Announcement{"n2": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "nodes not alive in memberlist never announce",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady},
				Nodes: threeNodes, Alive: []string{"n2"}},
			want: map[string][]Announcement{"n2": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "a live member without a Node object never announces",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady},
				Nodes: threeNodes, Alive: []string{"ghost", "n1"}},
			want: map[string][]Announcement{"n1": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "nobody alive, nobody announces",
			in:   Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes},
		},
		{
			name: "externalTrafficPolicy Local picks the node with the ready endpoint",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{local(web)},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n1", ready: no}, ep{node: "n3", ready: yes})}, Nodes: threeNodes, Alive: all},
			want: map[string][]Announcement{"n3": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "externalTrafficPolicy Local with the only endpoint on a dead node",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{local(web)},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{node: "n3", ready: yes})}, Nodes: threeNodes, Alive: []string{"n1", "n2"}},
		},
		{
			name: "externalTrafficPolicy Local with an endpoint on no node",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{local(web)},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{ready: yes})}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "externalTrafficPolicy Cluster with an endpoint on no node",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{web},
				Slices: []discoveryv1.EndpointSlice{slice("default", "web", ep{ready: yes})}, Nodes: threeNodes, Alive: []string{"n1"}},
			want: map[string][]Announcement{"n1": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "a service of another load-balancer class is not ours",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{func() corev1.Service {
				s := web
				s.Spec.LoadBalancerClass = ptr("other.io/lb")
				return s
			}()}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "a service of our load-balancer class",
			in: Inputs{LBClass: "ironlb.io/lb", Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{func() corev1.Service {
				s := web
				s.Spec.LoadBalancerClass = ptr("ironlb.io/lb")
				return s
			}()}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: []string{"n2"}},
			want: map[string][]Announcement{"n2": {{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")}}},
		},
		{
			name: "a service that is no longer a LoadBalancer is withdrawn even with a stale status",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{func() corev1.Service {
				s := web
				s.Spec.Type = corev1.ServiceTypeClusterIP
				return s
			}()}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: all},
		},
		{
			name: "dual-stack: each address is elected on its own, repeats and hostnames ignored",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: []corev1.Service{func() corev1.Service {
				s := service("default", "web", "fd00:254::51", "172.25.254.51", "172.25.254.51", "")
				s.Status.LoadBalancer.Ingress[3].Hostname = "lb.example"
				return s
			}()}, Slices: []discoveryv1.EndpointSlice{webReady}, Nodes: threeNodes, Alive: []string{"n3"}},
			want: map[string][]Announcement{"n3": {
				{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.51")},
				{Service: "default/web", Addr: netip.MustParseAddr("fd00:254::51")},
			}},
		},
		{
			name: "several services sorted by service then address",
			in: Inputs{Config: testConfig(ad("l2", []string{"lab", "other"})), Services: []corev1.Service{
				service("b", "z", "10.9.0.1"), web, service("a", "y", "172.25.254.59", "172.25.254.52"),
			}, Slices: []discoveryv1.EndpointSlice{webReady, slice("b", "z", ep{node: "n9"}), slice("a", "y", ep{node: "n1"})}, Nodes: threeNodes, Alive: []string{"n1"}},
			want: map[string][]Announcement{"n1": {
				{Service: "a/y", Addr: netip.MustParseAddr("172.25.254.52")},
				{Service: "a/y", Addr: netip.MustParseAddr("172.25.254.59")},
				{Service: "b/z", Addr: netip.MustParseAddr("10.9.0.1")},
				{Service: "default/web", Addr: netip.MustParseAddr("172.25.254.50")},
			}},
		},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Every node computes from the same inputs, each in its own
			// order: the answers must not depend on it.
			for round := range 5 {
				got := map[string][]Announcement{}
				for _, n := range []string{"n1", "n2", "n3", "ghost"} {
					in := shuffled(rng, tc.in)
					in.Node = n
					if a := Desired(in); len(a) > 0 {
						got[n] = a
					}
				}
				if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
					t.Fatalf("round %d: Desired per node (-want +got):\n%s", round, diff)
				}
			}
		})
	}
}

// shuffled returns in with every list in a random order.
func shuffled(rng *rand.Rand, in Inputs) Inputs {
	out := in
	out.Services = shuffle(rng, in.Services)
	out.Nodes = shuffle(rng, in.Nodes)
	out.Alive = shuffle(rng, in.Alive)
	out.Slices = shuffle(rng, in.Slices)
	for i := range out.Slices {
		out.Slices[i].Endpoints = shuffle(rng, out.Slices[i].Endpoints)
	}
	for i := range out.Services {
		out.Services[i].Status.LoadBalancer.Ingress = shuffle(rng, out.Services[i].Status.LoadBalancer.Ingress)
	}
	return out
}

func shuffle[T any](rng *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestDesiredOnlyTheLeaversAddressesMove: when a node dies, the addresses of
// the survivors stay where they are, and the dead node's addresses are all
// taken over by someone.
func TestDesiredOnlyTheLeaversAddressesMove(t *testing.T) {
	nodes := []corev1.Node{node("n1"), node("n2"), node("n3"), node("n4")}
	var svcs []corev1.Service
	var eps []discoveryv1.EndpointSlice
	for i := range 10 {
		name := fmt.Sprintf("svc%d", i)
		svcs = append(svcs, service("default", name, fmt.Sprintf("172.25.254.%d", 50+i)))
		eps = append(eps, slice("default", name, ep{node: "n1"}))
	}
	in := Inputs{Config: testConfig(ad("l2", []string{"lab"})), Services: svcs, Slices: eps, Nodes: nodes, Alive: []string{"n1", "n2", "n3", "n4"}}
	ownerOf := func(in Inputs) map[netip.Addr]string {
		out := map[netip.Addr]string{}
		for _, n := range nodes {
			in.Node = n.Name
			for _, a := range Desired(in) {
				if prev, dup := out[a.Addr]; dup {
					t.Fatalf("%s announced by %s and %s", a.Addr, prev, n.Name)
				}
				out[a.Addr] = n.Name
			}
		}
		return out
	}
	before := ownerOf(in)
	if len(before) != len(svcs) {
		t.Fatalf("%d of %d addresses have an owner: %v", len(before), len(svcs), before)
	}
	for _, dead := range []string{"n1", "n2", "n3", "n4"} {
		var alive []string
		for _, n := range nodes {
			if n.Name != dead {
				alive = append(alive, n.Name)
			}
		}
		in.Alive = alive
		after := ownerOf(in)
		moved := 0
		for addr, was := range before {
			now, ok := after[addr]
			switch {
			case !ok:
				t.Errorf("without %s: %s has no owner", dead, addr)
			case was != dead && now != was:
				t.Errorf("without %s: %s moved from %s to %s", dead, addr, was, now)
			case was == dead:
				moved++
			}
		}
		t.Logf("without %s: %d addresses moved", dead, moved)
	}
}

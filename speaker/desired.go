package speaker

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/internal/election"
	"github.com/ironlb/ironlb/internal/policy"
)

// ExcludeLabel on a Node keeps it from announcing any service address.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Announcement is one service address this node answers for in layer-2 mode.
type Announcement struct {
	// Service is "namespace/name".
	Service string
	Addr    netip.Addr
	// Interfaces to answer on, sorted; empty means every suitable interface.
	Interfaces []string
}

// Inputs is everything the layer-2 decision depends on. Every speaker feeds
// the same Inputs (but its own Node) and so agrees with the others on one
// owner per address.
type Inputs struct {
	// Node is this speaker's node name.
	Node   string
	Config policy.Config
	// LBClass is the spec.loadBalancerClass served; "" serves Services
	// without a class.
	LBClass  string
	Services []corev1.Service
	Slices   []discoveryv1.EndpointSlice
	Nodes    []corev1.Node
	// Alive is the memberlist view: names of the live speakers.
	Alive []string
}

// Desired returns the addresses in.Node announces, sorted by service then
// address.
//
// An address of a LoadBalancer Service (from status.loadBalancer.ingress) is
// announced when its pool is covered by an L2Advertisement that selects the
// Service and the Service has at least one ready endpoint. Its owner is the
// election winner among the eligible nodes: alive in memberlist, known as a
// Node object (labels and conditions are needed to judge it), selected by
// the nodeSelectors of one of those advertisements, not labelled
// ExcludeLabel, not NetworkUnavailable and, for externalTrafficPolicy
// Local, hosting a ready endpoint. The owner answers on the union of the
// interfaces of the advertisements that select it; one that names none
// means every interface.
func Desired(in Inputs) []Announcement {
	var out []Announcement
	for _, o := range owners(in) {
		if o.node == in.Node {
			out = append(out, Announcement{Service: o.service, Addr: o.addr, Interfaces: o.interfaces})
		}
	}
	return out
}

// ownership is the outcome of the election for one service address.
type ownership struct {
	service    string
	addr       netip.Addr
	node       string
	interfaces []string
}

// owners elects the owner of every announced address, sorted by service then
// address.
func owners(in Inputs) []ownership {
	nodes := eligibleNodes(in.Nodes, in.Alive)
	endpoints := readyEndpoints(in.Slices)

	var out []ownership
	for i := range in.Services {
		svc := &in.Services[i]
		if !announceable(svc, in.LBClass) {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		ready := endpoints[key]
		if len(ready) == 0 {
			continue
		}
		local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		for _, addr := range ingressAddrs(svc) {
			pool := in.Config.PoolOf(addr)
			if pool == nil {
				continue
			}
			var ads []*policy.L2Advertisement
			for j := range in.Config.L2Advertisements {
				ad := &in.Config.L2Advertisements[j]
				if ad.HasPool(pool.Name) && ad.MatchesService(svc.Labels) {
					ads = append(ads, ad)
				}
			}
			var candidates []string
			for _, n := range nodes {
				if local && !ready[n.Name] {
					continue
				}
				if slices.ContainsFunc(ads, func(ad *policy.L2Advertisement) bool { return ad.MatchesNode(n.Labels) }) {
					candidates = append(candidates, n.Name)
				}
			}
			owner, ok := election.Winner(addr, candidates)
			if !ok {
				continue
			}
			out = append(out, ownership{service: key, addr: addr, node: owner, interfaces: interfacesOf(ads, labelsOf(nodes, owner))})
		}
	}
	slices.SortFunc(out, func(a, b ownership) int {
		return cmp.Or(cmp.Compare(a.service, b.service), a.addr.Compare(b.addr))
	})
	return out
}

// announceable reports whether svc is a LoadBalancer Service of our class
// that has addresses.
func announceable(svc *corev1.Service, lbClass string) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !svc.DeletionTimestamp.IsZero() {
		return false
	}
	class := ""
	if svc.Spec.LoadBalancerClass != nil {
		class = *svc.Spec.LoadBalancerClass
	}
	return class == lbClass && len(svc.Status.LoadBalancer.Ingress) > 0
}

// ingressAddrs are the Service's published addresses, without repeats;
// hostnames and malformed entries are ignored.
func ingressAddrs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		a, err := netip.ParseAddr(ing.IP)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// eligibleNodes are the Nodes alive in memberlist that may announce at all:
// not excluded by label and with a usable network.
func eligibleNodes(nodes []corev1.Node, alive []string) []*corev1.Node {
	live := make(map[string]bool, len(alive))
	for _, n := range alive {
		live[n] = true
	}
	var out []*corev1.Node
	for i := range nodes {
		n := &nodes[i]
		if !live[n.Name] || !n.DeletionTimestamp.IsZero() {
			continue
		}
		if _, excluded := n.Labels[ExcludeLabel]; excluded {
			continue
		}
		if networkUnavailable(n) {
			continue
		}
		out = append(out, n)
	}
	return out
}

func networkUnavailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func labelsOf(nodes []*corev1.Node, name string) map[string]string {
	for _, n := range nodes {
		if n.Name == name {
			return n.Labels
		}
	}
	return nil
}

// readyEndpoints maps "namespace/service" to the set of node names hosting a
// ready endpoint; an endpoint without a node name counts under "" so that
// the Service still has a ready endpoint.
func readyEndpoints(eps []discoveryv1.EndpointSlice) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for i := range eps {
		s := &eps[i]
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		key := s.Namespace + "/" + name
		for _, ep := range s.Endpoints {
			// The API defines an absent Ready condition as ready.
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if out[key] == nil {
				out[key] = map[string]bool{}
			}
			node := ""
			if ep.NodeName != nil {
				node = *ep.NodeName
			}
			out[key][node] = true
		}
	}
	return out
}

// interfacesOf is the union of the interfaces of the advertisements that
// select a node with these labels, sorted; nil (every interface) as soon as
// one of them names none.
func interfacesOf(ads []*policy.L2Advertisement, nodeLabels map[string]string) []string {
	var out []string
	for _, ad := range ads {
		if !ad.MatchesNode(nodeLabels) {
			continue
		}
		if len(ad.Interfaces) == 0 {
			return nil
		}
		out = append(out, ad.Interfaces...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

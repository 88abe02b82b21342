package speaker

import (
	"context"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// BGPStatusName is the name of the ServiceBGPStatus of a Service advertised
// from node, built as StatusName builds the layer-2 one.
func BGPStatusName(namespace, service, node string) string {
	return statusName("bgp-", namespace, service, node)
}

// advertisedPeers lists, per eligible service, the peers its addresses are
// advertised to (sorted); services advertised to none are absent.
func advertisedPeers(svcs []bgp.ServiceAddrs, paths []bgp.Path) map[string][]string {
	out := map[string][]string{}
	for _, s := range svcs {
		if !s.Eligible {
			continue
		}
		set := map[string]bool{}
		for _, a := range s.Addresses {
			for _, p := range paths {
				if p.Prefix.Contains(a) {
					// DesiredPaths always names the peers.
					for _, name := range p.Peers {
						set[name] = true
					}
				}
			}
		}
		if len(set) > 0 {
			out[s.Service] = slices.Sorted(maps.Keys(set))
		}
	}
	return out
}

// setBGP records the latest BGP advertisements and schedules a write. alive
// is nil while the membership view is incomplete: no other node's objects
// are removed then.
func (w *statusWriter) setBGP(peers map[string][]string, alive []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bgpPeers, w.bgpAlive, w.bgpPending = peers, alive, true
	if w.queue != nil {
		w.queue.Add(statusKey)
	}
}

// syncBGP makes the ServiceBGPStatus objects of this node describe the
// Services it advertises, by the rules sync follows for ServiceL2Status.
func (w *statusWriter) syncBGP(ctx context.Context, peers map[string][]string, alive []string) error {
	want := map[string]v1beta1.ServiceBGPStatusStatus{}
	for svcKey, ps := range peers {
		ns, name, _ := strings.Cut(svcKey, "/")
		want[svcKey] = v1beta1.ServiceBGPStatusStatus{Node: w.node, ServiceName: name, ServiceNamespace: ns, Peers: ps}
	}
	return syncStatuses(ctx, w, statusKind[v1beta1.ServiceBGPStatus, *v1beta1.ServiceBGPStatus, v1beta1.ServiceBGPStatusStatus]{
		kind: "ServiceBGPStatus",
		name: BGPStatusName,
		list: func(ctx context.Context) ([]v1beta1.ServiceBGPStatus, error) {
			var list v1beta1.ServiceBGPStatusList
			err := w.client.List(ctx, &list, client.InNamespace(w.namespace))
			return list.Items, err
		},
		status: func(st *v1beta1.ServiceBGPStatus) *v1beta1.ServiceBGPStatusStatus { return &st.Status },
		equal:  equalBGPStatus,
	}, want, alive)
}

func equalBGPStatus(a, b v1beta1.ServiceBGPStatusStatus) bool {
	return a.Node == b.Node && a.ServiceName == b.ServiceName && a.ServiceNamespace == b.ServiceNamespace &&
		slices.Equal(a.Peers, b.Peers)
}

package speaker

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// joiner finds the other speakers through the API and joins them.
//
// The join candidates are the InternalIP addresses (of the memberlist
// address family) of every Node except this one, on the memberlist port.
// Nodes rather than speaker Pods because that works alike on a real cluster,
// where the speakers are a hostNetwork DaemonSet and so listen on their
// Node's address, and in the lab, which has Node objects but no kubelet and
// so no Pods. A Node without a speaker only costs a refused connection per
// attempt. The speaker needs nothing but list/watch on Nodes, which it has
// anyway for node selectors.
//
// The first join happens before the speaker announces anything: a speaker
// that announced while it still believed itself alone would claim every
// address for a moment, then let go of most of them. After that, Nodes that
// are not members are joined again every RejoinInterval, which brings in
// speakers that started later than us and re-merges the two halves of a
// healed partition.
type joiner struct {
	client  client.Reader
	members Members
	node    string
	port    int
	every   time.Duration
	log     logr.Logger
	// joined is closed once the first join attempt is over, successful or
	// not (the first speaker has nobody to join).
	joined chan struct{}
}

// Start runs until ctx ends.
func (j *joiner) Start(ctx context.Context) error {
	// Join needs a running memberlist: wait until it reports itself alive.
	poll := time.NewTicker(20 * time.Millisecond)
	for j.members.Alive() == nil {
		select {
		case <-ctx.Done():
			poll.Stop()
			return nil
		case <-poll.C:
		}
	}
	poll.Stop()
	j.join(ctx)
	close(j.joined)

	tick := time.NewTicker(j.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			j.join(ctx)
		}
	}
}

// join contacts the Nodes whose speaker is not a member now.
func (j *joiner) join(ctx context.Context) {
	var nodes corev1.NodeList
	if err := j.client.List(ctx, &nodes); err != nil {
		j.log.Error(err, "cannot list nodes to find peers")
		return
	}
	peers := joinCandidates(nodes.Items, j.node, j.members.Alive(), j.port)
	if len(peers) == 0 {
		return
	}
	n, err := j.members.Join(peers)
	if err != nil {
		// Expected for Nodes without a speaker; memberlist says which.
		j.log.V(1).Info("some peers did not answer", "peers", peers, "joined", n, "reason", err.Error())
		return
	}
	j.log.V(1).Info("joined peers", "peers", peers, "joined", n)
}

// joinCandidates are the addresses of the Nodes other than self and not in
// alive, of the family this member's own Node uses (IPv4 when unknown),
// sorted.
func joinCandidates(nodes []corev1.Node, self string, alive []string, port int) []string {
	v4 := true
	for i := range nodes {
		if nodes[i].Name == self {
			if a := internalIPs(&nodes[i]); len(a) > 0 && !slices.ContainsFunc(a, netip.Addr.Is4) {
				v4 = false
			}
		}
	}
	var out []string
	for i := range nodes {
		n := &nodes[i]
		if n.Name == self || slices.Contains(alive, n.Name) {
			continue
		}
		for _, a := range internalIPs(n) {
			if a.Is4() == v4 {
				out = append(out, netip.AddrPortFrom(a, uint16(port)).String())
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

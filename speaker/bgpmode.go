package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// ReasonBGPPeerProblem is the Warning Event on a BGPPeer with a setting this
// node's speaker cannot honour.
const ReasonBGPPeerProblem = "BGPPeerProblem"

// errBGPNotStarted is returned by sync before the manager has started the
// BGP mode; the reconcile is retried.
var errBGPNotStarted = errors.New("bgp mode not started yet")

// bgpMode runs this node's BGP speaker. The speaker exists only while at
// least one BGPPeer selects the node, so a node without peers neither
// listens nor dials. It is a manager Runnable: the speaker lives under the
// manager's context and withdraws its paths when the manager stops.
type bgpMode struct {
	node     string
	client   client.Reader
	recorder events.EventRecorder
	log      logr.Logger

	started chan struct{}
	// ctx is the manager's context, set by Start before started closes.
	ctx context.Context

	mu sync.Mutex
	// speaker is nil while no peer selects this node.
	speaker  *bgp.Speaker
	routerID netip.Addr
	stop     context.CancelFunc
	done     chan struct{}
	// told holds the peer problems already sent as Events, so a reconcile
	// repeats none; one that goes away and comes back is told again.
	told map[string]bool
}

func newBGPMode(node string, c client.Reader, recorder events.EventRecorder, log logr.Logger) *bgpMode {
	return &bgpMode{node: node, client: c, recorder: recorder, log: log.WithName("bgp"), started: make(chan struct{}), told: map[string]bool{}}
}

// Start blocks until the manager stops, then stops the speaker, which
// withdraws every path before its sessions close.
func (b *bgpMode) Start(ctx context.Context) error {
	b.ctx = ctx
	close(b.started)
	<-ctx.Done()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopSpeakerLocked()
	return nil
}

func (b *bgpMode) stopSpeakerLocked() {
	if b.speaker == nil {
		return
	}
	b.stop()
	<-b.done
	b.speaker, b.stop, b.done, b.routerID = nil, nil, nil, netip.Addr{}
}

// sync makes the speaker peer and advertise as the inputs say and returns
// the addresses it advertises, as announcements for the forwarder.
func (b *bgpMode) sync(ctx context.Context, in Inputs) ([]Announcement, error) {
	select {
	case <-b.started:
	default:
		return nil, errBGPNotStarted
	}
	node := bgpNode(in)
	peers, peerErrs := bgp.DesiredPeers(node, in.Config)
	svcs := bgpServices(in)
	paths := bgp.DesiredPaths(node, in.Config, svcs)

	b.mu.Lock()
	defer b.mu.Unlock()
	var routerID netip.Addr
	if len(peers) > 0 {
		// DesiredPeers gives every session the node's one router ID.
		routerID = peers[0].RouterID
	}
	if b.speaker != nil && b.routerID != routerID {
		// The server has one router ID for its life: a new one needs a new
		// server (its sessions restart either way).
		b.stopSpeakerLocked()
	}
	if routerID.IsValid() && b.speaker == nil {
		if err := b.startSpeakerLocked(routerID); err != nil {
			return nil, err
		}
	}
	var errs []error
	if b.speaker != nil {
		if err := b.speaker.SyncPeers(ctx, peers); err != nil {
			peerErrs = append(peerErrs, err)
		}
		if err := b.speaker.SyncPaths(ctx, paths); err != nil {
			errs = append(errs, fmt.Errorf("sync %d bgp paths: %w", len(paths), err))
		}
	} else {
		paths = nil
	}
	b.reportLocked(ctx, in, peerErrs)
	return advertised(svcs, paths), errors.Join(errs...)
}

func (b *bgpMode) startSpeakerLocked(routerID netip.Addr) error {
	s, err := bgp.New(bgp.Config{RouterID: routerID, Logger: b.log})
	if err != nil {
		return fmt.Errorf("create bgp speaker: %w", err)
	}
	ctx, stop := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Start(ctx); err != nil {
			b.log.Error(err, "bgp speaker stopped with an error")
		}
	}()
	b.log.Info("bgp speaker started", "routerID", routerID)
	b.speaker, b.routerID, b.stop, b.done = s, routerID, stop, done
	return nil
}

// reportLocked sends each peer problem not told before as a Warning Event
// on its BGPPeer; problems not tied to one peer are logged.
func (b *bgpMode) reportLocked(ctx context.Context, in Inputs, errs []error) {
	now := map[string]bool{}
	for _, err := range errs {
		msg := err.Error()
		now[msg] = true
		if b.told[msg] {
			continue
		}
		var pe *bgp.PeerError
		if !errors.As(err, &pe) {
			b.log.Error(err, "bgp peers")
			continue
		}
		var peer v1beta2.BGPPeer
		if err := b.client.Get(ctx, client.ObjectKey{Namespace: pe.Namespace, Name: pe.Peer}, &peer); err != nil {
			b.log.Error(err, "read bgp peer for an event", "peer", pe.Peer)
			delete(now, msg) // tell it next time
			continue
		}
		b.recorder.Eventf(&peer, nil, corev1.EventTypeWarning, ReasonBGPPeerProblem, "Peer", "node %q: %s", in.Node, msg)
	}
	b.told = now
}

// bgpNode is this node as the BGP translation sees it; no labels nor
// addresses when the Node is unknown, so no peer selects it.
func bgpNode(in Inputs) bgp.Node {
	out := bgp.Node{Name: in.Node}
	for i := range in.Nodes {
		if n := &in.Nodes[i]; n.Name == in.Node {
			out.Labels = n.Labels
			out.Addresses = internalIPs(n)
		}
	}
	return out
}

// bgpServices lists the LoadBalancer Services with addresses and whether
// this node may advertise them, by the layer-2 rule minus the election:
// the node is known, not excluded nor NetworkUnavailable, and the Service
// has a ready endpoint (on this node with externalTrafficPolicy Local).
// Memberlist plays no part: every eligible node advertises.
func bgpServices(in Inputs) []bgp.ServiceAddrs {
	nodeOK := false
	for i := range in.Nodes {
		n := &in.Nodes[i]
		if n.Name != in.Node || !n.DeletionTimestamp.IsZero() || networkUnavailable(n) {
			continue
		}
		_, excluded := n.Labels[ExcludeLabel]
		nodeOK = !excluded
	}
	endpoints := readyEndpoints(in.Slices)
	var out []bgp.ServiceAddrs
	for i := range in.Services {
		svc := &in.Services[i]
		if !announceable(svc, in.LBClass) {
			continue
		}
		addrs := ingressAddrs(svc)
		if len(addrs) == 0 {
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		ready := endpoints[key]
		eligible := nodeOK && len(ready) > 0
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			eligible = eligible && ready[in.Node]
		}
		pool := ""
		if p := in.Config.PoolOf(addrs[0]); p != nil {
			pool = p.Name
		}
		out = append(out, bgp.ServiceAddrs{Service: key, Labels: svc.Labels, Pool: pool, Addresses: addrs, Eligible: eligible})
	}
	return out
}

// advertised are the addresses of eligible services covered by one of the
// paths.
func advertised(svcs []bgp.ServiceAddrs, paths []bgp.Path) []Announcement {
	var out []Announcement
	for _, s := range svcs {
		if !s.Eligible {
			continue
		}
		for _, a := range s.Addresses {
			if slices.ContainsFunc(paths, func(p bgp.Path) bool { return p.Prefix.Contains(a) }) {
				out = append(out, Announcement{Service: s.Service, Addr: a})
			}
		}
	}
	return out
}

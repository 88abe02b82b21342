package speaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

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

// ReasonBGPSessionDown is the Warning Event on a BGPPeer whose session from
// this node stays down, with the last reason (a refused or unanswered
// connection, a NOTIFICATION from the router).
const ReasonBGPSessionDown = "BGPSessionDown"

// ReasonBFDSessionChanged is the Event on a BGPPeer whose BFD session from
// this node changed state: Normal when it comes up, Warning otherwise.
const ReasonBFDSessionChanged = "BFDSessionChanged"

// sessionCheckInterval is how often the sessions are looked at for
// BGPSessionDown. A session must be down at two checks in a row to be told,
// so one that is merely coming up is not.
const sessionCheckInterval = 5 * time.Second

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
	// stopped is set once the manager stops: a late reconcile must not
	// bring up a new speaker that would advertise again.
	stopped bool
	// last is what the last sync advertised; a sync after the stop returns
	// it, so the forwarder keeps carrying the traffic still in flight.
	last []Announcement
	stop context.CancelFunc
	done chan struct{}
	// told holds the peer problems already sent as Events, so a reconcile
	// repeats none; one that goes away and comes back is told again.
	told map[string]bool
	// assigned are the services advertised after the last sync, to tell
	// users (nodeAssigned) when one starts.
	assigned map[string][]string
	// status writes ServiceBGPStatus; nil in tests without one.
	status *statusWriter
	// state takes the peer problems for this node's ConfigurationState;
	// nil in tests without one.
	state *configState
	// peerNS is the namespace of each BGPPeer of the last sync, by name.
	peerNS map[string]string

	// Owned by Start's goroutine: sessions seen down at the last check, and
	// those told as BGPSessionDown with the reason told.
	seenDown map[string]bool
	toldDown map[string]string
	// bfdTold is the BFD state last told (or first seen) per peer.
	bfdTold map[string]string
}

func newBGPMode(node string, c client.Reader, recorder events.EventRecorder, log logr.Logger) *bgpMode {
	return &bgpMode{node: node, client: c, recorder: recorder, log: log.WithName("bgp"), started: make(chan struct{}), told: map[string]bool{}}
}

// Start blocks until the manager stops, then stops the speaker, which
// withdraws every path before its sessions close.
func (b *bgpMode) Start(ctx context.Context) error {
	b.ctx = ctx
	close(b.started)
	tick := time.NewTicker(sessionCheckInterval)
	defer tick.Stop()
	for stopping := false; !stopping; {
		select {
		case <-tick.C:
			b.tellSessions(ctx)
		case <-ctx.Done():
			stopping = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.stopSpeakerLocked()
	return nil
}

// tellSessions sends BGPSessionDown for each session that has been down
// since the last check, once per reason; a session that comes back up is
// told again when it next fails.
func (b *bgpMode) tellSessions(ctx context.Context) {
	b.mu.Lock()
	s, namespaces := b.speaker, b.peerNS
	b.mu.Unlock()
	var states []bgp.PeerState
	if s != nil {
		var err error
		if states, err = s.PeerStates(ctx); err != nil {
			b.log.Error(err, "read bgp sessions")
			return
		}
	}
	seen, told := map[string]bool{}, map[string]string{}
	bfdTold := map[string]string{}
	for _, st := range states {
		if st.BFDState != "" {
			bfdTold[st.Name] = st.BFDState
			prev, known := b.bfdTold[st.Name]
			// A BFD session that starts down is merely coming up.
			if st.BFDState != prev && (known || st.BFDState == "up") {
				b.tellBFD(ctx, namespaces[st.Name], st, prev)
			}
		}
		// Peers left unconfigured are BGPPeerProblem's business.
		if st.Up || st.LastError == "" || !st.Address.IsValid() {
			continue
		}
		seen[st.Name] = true
		if !b.seenDown[st.Name] {
			continue
		}
		told[st.Name] = st.LastError
		if b.toldDown[st.Name] == st.LastError {
			continue
		}
		peer, ok := b.eventPeer(ctx, namespaces[st.Name], st.Name)
		if !ok {
			delete(told, st.Name) // tell it next time
			continue
		}
		b.log.Info("bgp session down", "peer", st.Name, "state", st.State, "reason", st.LastError)
		b.recorder.Eventf(peer, nil, corev1.EventTypeWarning, ReasonBGPSessionDown, "Connect",
			"node %q: session with %v is down (%s): %s", b.node, st.Address, st.State, st.LastError)
	}
	b.seenDown, b.toldDown, b.bfdTold = seen, told, bfdTold
}

// tellBFD sends BFDSessionChanged for a peer whose BFD state changed from
// prev ("" when first seen).
func (b *bgpMode) tellBFD(ctx context.Context, namespace string, st bgp.PeerState, prev string) {
	peer, ok := b.eventPeer(ctx, namespace, st.Name)
	if !ok {
		return
	}
	kind := corev1.EventTypeWarning
	if st.BFDState == "up" {
		kind = corev1.EventTypeNormal
	}
	b.log.Info("bfd session changed", "peer", st.Name, "from", prev, "to", st.BFDState)
	b.recorder.Eventf(peer, nil, kind, ReasonBFDSessionChanged, "Detect",
		"node %q: BFD session with %v is %s (was %s)", b.node, st.Address, st.BFDState, cmp.Or(prev, "not started"))
}

// eventPeer reads the BGPPeer an Event is about.
func (b *bgpMode) eventPeer(ctx context.Context, namespace, name string) (*v1beta2.BGPPeer, bool) {
	var peer v1beta2.BGPPeer
	if err := b.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &peer); err != nil {
		b.log.Error(err, "read bgp peer for an event", "peer", name)
		return nil, false
	}
	return &peer, true
}

// NeedLeaderElection puts the BGP mode in the manager's first stop group,
// with memberlist and the forwarder, instead of after them: a clean stop
// then withdraws the routes at once, while the forwarder's drain keeps
// carrying what the router still sends until it has moved the traffic.
func (b *bgpMode) NeedLeaderElection() bool { return false }

func (b *bgpMode) stopSpeakerLocked() {
	if b.speaker == nil {
		return
	}
	start := time.Now()
	b.stop()
	<-b.done
	b.log.Info("bgp speaker stopped: paths withdrawn, sessions closed", "took", time.Since(start))
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
	if b.stopped {
		return b.last, nil
	}
	b.peerNS = make(map[string]string, len(in.Config.Peers))
	for _, p := range in.Config.Peers {
		b.peerNS[p.Name] = p.Namespace
	}
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
	b.tellAssignedLocked(in, advertisedPeers(svcs, paths))
	b.last = advertised(svcs, paths)
	return b.last, errors.Join(errs...)
}

// tellAssignedLocked logs the services this node started and stopped
// advertising, records nodeAssigned on each it started, and hands the peers
// per service to the ServiceBGPStatus writer.
func (b *bgpMode) tellAssignedLocked(in Inputs, now map[string][]string) {
	log := b.log
	for svcKey := range b.assigned {
		if _, ok := now[svcKey]; !ok {
			log.Info("stopped advertising", "service", svcKey)
		}
	}
	for svcKey, peers := range now {
		if _, ok := b.assigned[svcKey]; ok {
			continue
		}
		log.Info("advertising", "service", svcKey, "peer", peers)
		for i := range in.Services {
			if in.Services[i].Namespace+"/"+in.Services[i].Name == svcKey {
				b.recorder.Eventf(&in.Services[i], nil, corev1.EventTypeNormal, ReasonNodeAssigned, "Announce",
					"announcing from node %q with protocol %q", b.node, "bgp")
				break
			}
		}
	}
	b.assigned = now
	if b.status != nil {
		b.status.setBGP(now, in.Alive)
	}
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

// reportLocked puts the peer problems in this node's ConfigurationState and
// sends each not told before as a Warning Event on its BGPPeer; problems not
// tied to one peer are logged.
func (b *bgpMode) reportLocked(ctx context.Context, in Inputs, errs []error) {
	if b.state != nil {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		b.state.set("bgp", msgs)
	}
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

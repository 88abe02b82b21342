package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/ironlb/ironlb/speaker/forwarder"
)

// ReasonForwarderProblem is the Warning Event on a Service part of which the
// forwarder cannot carry as written (an unknown scheduler, an SCTP port...).
const ReasonForwarderProblem = "ForwarderProblem"

// forwarding carries the traffic of the addresses this node announces to
// their endpoints. It runs in the speaker's own network namespace, the
// node's. Neither backend makes the node answer ARP for a service address by
// itself: nftables rewrites the destination in prerouting, before routing,
// so the address is never bound; IPVS binds it on a dummy interface and sets
// arp_ignore/arp_announce as strictARP does. The layer-2 responder alone
// answers for it.
type forwarding struct {
	// table is nil when the forwarder is off.
	table    forwarder.Table
	node     string
	recorder events.EventRecorder

	// drain is how long a stopping speaker keeps forwarding before it
	// removes what it installed (see Start).
	drain time.Duration
	log   logr.Logger

	// run serialises syncs with the stop; stopped freezes the table.
	// carried is how many virtual services the last sync handed over:
	// with none there is nothing to drain.
	run     sync.Mutex
	stopped bool
	carried int
	// programmed are the addresses the last successful sync carries; an
	// address outside it is not announced (see forwarded). withheld are
	// those forwarded last left out, so each is told once.
	programmed map[netip.Addr]bool
	withheld   map[netip.Addr]bool

	mu sync.Mutex
	// told holds, per service, the problem messages already sent as
	// Events, so a reconcile repeats none; a message that goes away and
	// comes back is told again.
	told map[string]map[string]bool
}

// newForwarding resolves --forwarder and builds the backend in the caller's
// network namespace. mode "" means off. It returns the backend chosen (for
// the metric) and logs the choice and its reason once.
func newForwarding(mode string, node string, recorder events.EventRecorder, log logr.Logger) (*forwarding, forwarder.Mode, error) {
	f := &forwarding{node: node, recorder: recorder, told: map[string]map[string]bool{}, drain: defaultDrain, log: log.WithName("forwarder")}
	if mode == "" {
		mode = string(forwarder.ModeOff)
	}
	backend, reason, err := forwarder.Resolve(forwarder.Mode(mode), forwarder.Available)
	if err != nil {
		return nil, "", fmt.Errorf("choose forwarder: %w", err)
	}
	log = log.WithName("forwarder")
	switch backend {
	case forwarder.ModeIPVS:
		t, err := forwarder.NewIPVS(forwarder.IPVSConfig{Logger: log})
		if err != nil {
			return nil, "", fmt.Errorf("start IPVS forwarder: %w", err)
		}
		f.table = t
	case forwarder.ModeNFTables:
		t, err := forwarder.NewNFTables(forwarder.NFTablesConfig{Logger: log})
		if err != nil {
			return nil, "", fmt.Errorf("start nftables forwarder: %w", err)
		}
		f.table = t
	}
	log.Info("forwarder chosen", "backend", string(backend), "reason", reason)
	return f, backend, nil
}

// sync makes the forwarder carry exactly the announced addresses of the
// Services behind announce, and tells users of the parts it cannot carry.
func (f *forwarding) sync(ctx context.Context, in Inputs, announce []Announcement) error {
	if f == nil || f.table == nil {
		return nil
	}
	f.run.Lock()
	defer f.run.Unlock()
	if f.stopped {
		return nil
	}
	announced := make(map[netip.Addr]bool, len(announce))
	carried := map[string]bool{}
	for _, a := range announce {
		announced[a.Addr] = true
		carried[a.Service] = true
	}
	var svcs []corev1.Service
	for i := range in.Services {
		if carried[in.Services[i].Namespace+"/"+in.Services[i].Name] {
			svcs = append(svcs, in.Services[i])
		}
	}
	vs, problems := forwarder.Expand(forwarder.ExpandInput{Node: f.node, Services: svcs, Slices: in.Slices, Announced: announced})
	f.report(svcs, problems)
	f.carried = len(vs)
	if err := f.table.Sync(ctx, vs); err != nil {
		return fmt.Errorf("forward %d virtual services: %w", len(vs), err)
	}
	f.programmed = announced
	return nil
}

// ReasonNotForwarded is the Warning Event on a Service whose address this
// node won but does not announce, because its forwarding failed.
const ReasonNotForwarded = "NotForwarded"

// forwarded returns the announcements whose addresses the forwarder
// carried at its last successful sync: an address that would draw traffic
// here and then drop it is better left to no one (the Service's Event and
// the speaker's log say why) than announced. After a failed sync that is
// what the previous one carried, as the backends' failures leave the
// previous state in place or retry it on the next sync. With the forwarder
// off every announcement passes. syncErr is the failure told with each
// address newly held back.
func (f *forwarding) forwarded(in Inputs, as []Announcement, syncErr error) []Announcement {
	if f == nil || f.table == nil {
		return as
	}
	f.run.Lock()
	defer f.run.Unlock()
	out := make([]Announcement, 0, len(as))
	withheld := map[netip.Addr]bool{}
	for _, a := range as {
		if f.programmed[a.Addr] {
			out = append(out, a)
			continue
		}
		withheld[a.Addr] = true
		if f.withheld[a.Addr] {
			continue
		}
		f.log.Error(syncErr, "not announcing: forwarding for the address failed", "service", a.Service, "ip", a.Addr)
		for i := range in.Services {
			if in.Services[i].Namespace+"/"+in.Services[i].Name == a.Service {
				f.recorder.Eventf(&in.Services[i], nil, corev1.EventTypeWarning, ReasonNotForwarded, "Announce",
					"node %q does not announce %s: its forwarding failed: %v", f.node, a.Addr, syncErr)
				break
			}
		}
	}
	f.withheld = withheld
	return out
}

// defaultDrain covers a layer-2 hand-over after a clean stop: the leave
// reaches the other speakers at once, and the new owner's gratuitous ARP
// redirects clients within a few hundred milliseconds; until then clients
// still send here. It stays well inside the speaker's termination grace
// period (10 s).
const defaultDrain = 3 * time.Second

// Start implements manager.Runnable: it waits for the speaker to stop, then
// takes back what the forwarder installed. First the table is frozen and
// kept for the drain period, so traffic that still arrives while another
// node takes the addresses over is carried, and connections through this
// node get their last packets through; then the backend removes its rules,
// services and bound addresses, unless a successor changed them meanwhile
// (forwarder.ErrChangedSinceSync), in which case they are the successor's
// and stay. A speaker that dies without stopping leaves everything in
// place; the next speaker on the node takes it over by reading the kernel.
func (f *forwarding) Start(ctx context.Context) error {
	if f == nil || f.table == nil {
		return nil
	}
	<-ctx.Done()
	f.run.Lock()
	f.stopped = true
	carried := f.carried
	f.run.Unlock()
	c, ok := f.table.(forwarder.Cleaner)
	if !ok {
		return nil
	}
	if f.drain > 0 && carried > 0 {
		f.log.Info("stopping: forwarding continues while the addresses move", "drain", f.drain)
		time.Sleep(f.drain)
	}
	f.run.Lock()
	defer f.run.Unlock()
	// The manager's context is done; cleanup gets its own deadline.
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Cleanup(cctx)
	switch {
	case errors.Is(err, forwarder.ErrChangedSinceSync):
		f.log.Info("left the forwarding state in place: another program changed it since the last sync", "reason", err.Error())
		return nil
	case err != nil:
		return fmt.Errorf("remove forwarding state: %w", err)
	}
	f.log.Info("removed the forwarding state")
	return nil
}

// report records a Warning Event for each problem not told before.
func (f *forwarding) report(svcs []corev1.Service, problems []forwarder.Problem) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := map[string]map[string]bool{}
	for _, p := range problems {
		msg := p.Err.Error()
		if now[p.Service] == nil {
			now[p.Service] = map[string]bool{}
		}
		now[p.Service][msg] = true
		if f.told[p.Service][msg] {
			continue
		}
		for i := range svcs {
			if svcs[i].Namespace+"/"+svcs[i].Name == p.Service {
				f.recorder.Eventf(&svcs[i], nil, corev1.EventTypeWarning, ReasonForwarderProblem, "Forward",
					"node %q: %s", f.node, msg)
				break
			}
		}
	}
	f.told = now
}

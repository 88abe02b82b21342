package layer2

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// DefaultSchedule is when a gained address is announced, counted from the
// moment it is gained.
var DefaultSchedule = []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond, time.Second}

// GroupJoiner manages IPv6 multicast membership on one interface.
type GroupJoiner interface {
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
	Close() error
}

// Conns are the sockets of one interface's Responder. ARP receives and sends
// Ethernet frames of type ARP, NDP frames of type IPv6 (only Neighbor
// Solicitations need to arrive). A nil ARP or NDP leaves that protocol
// unanswered on the interface.
type Conns struct {
	ARP    net.PacketConn
	NDP    net.PacketConn
	Groups GroupJoiner
	// LinkLocal is the interface's IPv6 link-local address, the source of
	// neighbor advertisements; zero means the target address itself.
	LinkLocal netip.Addr
}

func (c Conns) close() error {
	var errs []error
	if c.ARP != nil {
		errs = append(errs, c.ARP.Close())
	}
	if c.NDP != nil {
		errs = append(errs, c.NDP.Close())
	}
	if c.Groups != nil {
		errs = append(errs, c.Groups.Close())
	}
	return errors.Join(errs...)
}

// Stats counts what responders did.
type Stats struct {
	ARPAnswered   uint64 // ARP requests answered
	NDPAnswered   uint64 // neighbor solicitations answered
	Announcements uint64 // gratuitous ARP / unsolicited NA rounds sent
}

type counters struct{ arp, ndp, announced atomic.Uint64 }

func (c *counters) stats() Stats {
	return Stats{ARPAnswered: c.arp.Load(), NDPAnswered: c.ndp.Load(), Announcements: c.announced.Load()}
}

// Responder answers for the owned addresses on one interface.
type Responder struct {
	ifi       net.Interface
	conns     Conns
	linkLocal netip.Addr // source of our advertisements, if the interface has one
	schedule  []time.Duration
	log       logr.Logger
	counters  *counters
	carrier   func(net.Interface) bool

	// owned is read by the packet loops on every frame without locking.
	owned atomic.Pointer[map[netip.Addr]struct{}]
	kick  chan struct{}

	mu      sync.Mutex
	groups  map[netip.Addr]int // solicited-node group -> owned addresses in it
	pending map[netip.Addr]announcement
	started bool
}

type announcement struct {
	gained time.Time
	next   int // index into schedule
}

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	// Schedule of announcements after gaining an address; nil means
	// DefaultSchedule, empty (non-nil) means none.
	Schedule []time.Duration
	Logger   logr.Logger
	stats    *counters
	// carrier reports whether the interface has a link (default: the
	// kernel's IFF_RUNNING, set when it is up with carrier, as the calling
	// thread's namespace sees it).
	carrier func(net.Interface) bool
}

// NewResponder returns a responder for ifi that uses conns, which it owns
// from now on (Start closes them). It starts nothing.
func NewResponder(ifi net.Interface, conns Conns, cfg ResponderConfig) (*Responder, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("responder on %q: hardware address %v is not Ethernet", ifi.Name, ifi.HardwareAddr)
	}
	if cfg.Schedule == nil {
		cfg.Schedule = DefaultSchedule
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	if cfg.stats == nil {
		cfg.stats = &counters{}
	}
	if cfg.carrier == nil {
		cfg.carrier = hasCarrier
	}
	r := &Responder{
		ifi:       ifi,
		conns:     conns,
		linkLocal: conns.LinkLocal,
		schedule:  slices.Sorted(slices.Values(cfg.Schedule)),
		log:       cfg.Logger.WithValues("iface", ifi.Name),
		counters:  cfg.stats,
		carrier:   cfg.carrier,
		kick:      make(chan struct{}, 1),
		groups:    map[netip.Addr]int{},
		pending:   map[netip.Addr]announcement{},
	}
	empty := map[netip.Addr]struct{}{}
	r.owned.Store(&empty)
	return r, nil
}

// Owned returns the addresses the responder answers for, sorted.
func (r *Responder) Owned() []netip.Addr {
	return slices.SortedFunc(maps.Keys(*r.owned.Load()), netip.Addr.Compare)
}

// Set makes addrs the complete set of addresses answered on this interface.
// Addresses gained are announced per the schedule; addresses lost are
// silent from now on. Errors joining multicast groups are returned after
// everything else was applied.
func (r *Responder) Set(addrs []netip.Addr) error {
	want := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if (a.Is4() && r.conns.ARP == nil) || (a.Is6() && r.conns.NDP == nil) {
			continue
		}
		want[a] = struct{}{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.owned.Load()
	var errs []error
	now := time.Now()
	for a := range want {
		if _, ok := old[a]; ok {
			continue
		}
		if a.Is6() {
			if err := r.joinLocked(a); err != nil {
				errs = append(errs, err)
			}
		}
		if len(r.schedule) > 0 {
			r.pending[a] = announcement{gained: now}
		}
		r.log.V(1).Info("answering for address", "ip", a)
	}
	for a := range old {
		if _, ok := want[a]; ok {
			continue
		}
		delete(r.pending, a)
		if a.Is6() {
			if err := r.leaveLocked(a); err != nil {
				errs = append(errs, err)
			}
		}
		r.log.V(1).Info("stopped answering for address", "ip", a)
	}
	// Publish before announcing, so that answers and announcements agree.
	r.owned.Store(&want)
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// Reannounce announces every owned address again per the schedule, as if
// it had just been gained. The speaker calls it when a partition heals: the
// other side may have announced these addresses meanwhile, and neighbours
// that followed it must come back without waiting for their entries to go
// stale.
func (r *Responder) Reannounce() {
	r.mu.Lock()
	if len(r.schedule) > 0 {
		now := time.Now()
		for a := range *r.owned.Load() {
			r.pending[a] = announcement{gained: now}
		}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Responder) joinLocked(a netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return fmt.Errorf("solicited-node group of %s: %w", a, err)
	}
	r.groups[g]++
	if r.groups[g] > 1 || r.conns.Groups == nil {
		return nil
	}
	if err := r.conns.Groups.JoinGroup(g); err != nil {
		return fmt.Errorf("join %s on %s for %s: %w", g, r.ifi.Name, a, err)
	}
	return nil
}

func (r *Responder) leaveLocked(a netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return fmt.Errorf("solicited-node group of %s: %w", a, err)
	}
	r.groups[g]--
	if r.groups[g] > 0 {
		return nil
	}
	delete(r.groups, g)
	if r.conns.Groups == nil {
		return nil
	}
	if err := r.conns.Groups.LeaveGroup(g); err != nil {
		return fmt.Errorf("leave %s on %s for %s: %w", g, r.ifi.Name, a, err)
	}
	return nil
}

func (r *Responder) owns(a netip.Addr) bool {
	_, ok := (*r.owned.Load())[a]
	return ok
}

// Start answers and announces until ctx ends or a socket fails, then closes
// the sockets. It returns nil after ctx ended.
func (r *Responder) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return fmt.Errorf("responder on %q already started", r.ifi.Name)
	}
	r.started = true
	r.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	if r.conns.ARP != nil {
		wg.Go(func() { errc <- r.serve(ctx, r.conns.ARP, "arp", r.answerARP) })
	}
	if r.conns.NDP != nil {
		wg.Go(func() { errc <- r.serve(ctx, r.conns.NDP, "ndp", r.answerNDP) })
	}
	wg.Go(func() { r.announceLoop(ctx) })

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	// Closing unblocks the reads.
	closeErr := r.conns.close()
	wg.Wait()
	if err != nil {
		return err
	}
	if closeErr != nil {
		return fmt.Errorf("close sockets on %q: %w", r.ifi.Name, closeErr)
	}
	return nil
}

// serve reads frames until the socket closes.
func (r *Responder) serve(ctx context.Context, c net.PacketConn, proto string, answer func([]byte) ([]byte, netip.Addr, error)) error {
	buf := make([]byte, max(r.ifi.MTU, 1500)+64)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The kernel reports a link going down once on a bound packet
			// socket, which keeps working when the link comes back.
			if errors.Is(err, syscall.ENETDOWN) {
				r.log.V(1).Info("link went down, still listening", "protocol", proto)
				continue
			}
			return fmt.Errorf("read %s on %q: %w", proto, r.ifi.Name, err)
		}
		reply, addr, err := answer(buf[:n])
		if errors.Is(err, errNotForUs) {
			continue
		}
		if err != nil {
			r.log.Error(err, "cannot answer", "ip", addr)
			continue
		}
		if err := r.write(c, reply); err != nil {
			r.log.Error(err, "cannot send answer", "ip", addr)
			continue
		}
		if proto == "arp" {
			r.counters.arp.Add(1)
		} else {
			r.counters.ndp.Add(1)
		}
	}
}

func (r *Responder) answerARP(frame []byte) ([]byte, netip.Addr, error) {
	return arpReply(frame, r.ifi.HardwareAddr, r.owns)
}

func (r *Responder) answerNDP(frame []byte) ([]byte, netip.Addr, error) {
	return ndpReply(frame, r.ifi.HardwareAddr, r.linkLocal, r.owns)
}

func (r *Responder) write(c net.PacketConn, frame []byte) error {
	// The Ethernet destination is the first six bytes of the frame.
	_, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[:6])})
	return err
}

// announceLoop sends scheduled announcements: at once when Set gains an
// address, then at each later offset of the schedule.
func (r *Responder) announceLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var wait <-chan time.Time
		if next, ok := r.announceDue(time.Now()); ok {
			timer.Reset(time.Until(next))
			wait = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-wait:
		}
	}
}

// announceDue sends what is due at now and returns when the next
// announcement is due.
func (r *Responder) announceDue(now time.Time) (time.Time, bool) {
	var due []netip.Addr
	var next time.Time
	r.mu.Lock()
	for a, an := range r.pending {
		at := an.gained.Add(r.schedule[an.next])
		if !at.After(now) {
			due = append(due, a)
			an.next++
			if an.next == len(r.schedule) {
				delete(r.pending, a)
				continue
			}
			r.pending[a] = an
			at = an.gained.Add(r.schedule[an.next])
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	r.mu.Unlock()
	if len(due) > 0 && !r.carrier(r.ifi) {
		// Without carrier the frames go nowhere, and they must not be
		// kept for later: an address gained while cut off was won on a
		// membership view that saw the others dead, and announcing it
		// once the link is back would take it from its real owner. The
		// owner re-announces once the membership heals.
		r.log.V(1).Info("no carrier, announcements dropped", "addresses", len(due))
		return next, !next.IsZero()
	}
	for _, a := range due {
		if err := r.announce(a); err != nil {
			r.log.Error(err, "cannot announce address", "ip", a)
		}
	}
	return next, !next.IsZero()
}

func (r *Responder) announce(a netip.Addr) error {
	// Set may have dropped the address since it was found due.
	if !r.owns(a) {
		return nil
	}
	var frames [][]byte
	var c net.PacketConn
	if a.Is4() {
		f, err := gratuitousARP(r.ifi.HardwareAddr, a)
		if err != nil {
			return err
		}
		frames, c = f, r.conns.ARP
	} else {
		f, err := unsolicitedNA(r.ifi.HardwareAddr, r.linkLocal, a)
		if err != nil {
			return err
		}
		frames, c = [][]byte{f}, r.conns.NDP
	}
	for _, f := range frames {
		if err := r.write(c, f); err != nil {
			return fmt.Errorf("send announcement of %s on %q: %w", a, r.ifi.Name, err)
		}
	}
	r.counters.announced.Add(1)
	return nil
}

// hasCarrier asks the kernel whether ifi is up with a link.
func hasCarrier(ifi net.Interface) bool {
	cur, err := net.InterfaceByIndex(ifi.Index)
	if err != nil {
		// Unknown: announcing is the safe side for an address we own.
		return true
	}
	return cur.Flags&net.FlagRunning != 0
}

// Stats counts what this responder did (shared by all responders that
// Responders created).
func (r *Responder) Stats() Stats { return r.counters.stats() }

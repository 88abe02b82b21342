package membership

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is wrapped by New for a configuration it rejects.
	ErrInvalidConfig = errors.New("invalid membership config")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("membership already started")
)

// DefaultPort is the port speakers use for memberlist traffic, TCP and UDP.
const DefaultPort = 7946

// Config configures a member. Zero durations and multipliers take the
// defaults documented in the package comment.
type Config struct {
	// NodeName is this member's name; it must be unique in the cluster and
	// is what Alive reports (the Kubernetes node name).
	NodeName string
	// BindAddr is the node address memberlist binds to and advertises.
	BindAddr netip.Addr
	// Port for TCP and UDP; 0 picks a free port (tests), the speaker uses
	// DefaultPort.
	Port int
	// SecretKey is the raw value of the `secretkey` entry of the memberlist
	// Secret; DeriveKey makes the encryption key of it, as MetalLB does.
	// Empty disables encryption (the speaker allows it only with
	// --memberlist-allow-unencrypted).
	SecretKey []byte
	// Peers are joined when Start runs (host or host:port).
	Peers []string

	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	IndirectChecks          int
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	GossipInterval          time.Duration
	// PushPullInterval is how often full state is exchanged with one random
	// peer (default 10 s).
	PushPullInterval time.Duration
	// TCPTimeout bounds joins and TCP fallback probes (default 2 s).
	TCPTimeout time.Duration
	// LeaveTimeout bounds how long a clean stop waits for its leave message
	// to go out (default 1 s).
	LeaveTimeout time.Duration
	// RejoinInterval is how often a member that failed or left within the
	// last RejoinWindow is contacted again (default 500 ms), and so about
	// how long a healed partition or a node whose link came back takes to
	// merge (see the package comment). RejoinWindow defaults to 2 min;
	// after it the speaker's slower rejoin through the API takes over.
	RejoinInterval time.Duration
	RejoinWindow   time.Duration

	Logger logr.Logger
}

// Tuned defaults, explained in the package comment.
const (
	defaultProbeInterval           = 100 * time.Millisecond
	defaultProbeTimeout            = 50 * time.Millisecond
	defaultIndirectChecks          = 2
	defaultSuspicionMult           = 2
	defaultSuspicionMaxTimeoutMult = 2
	defaultGossipInterval          = 50 * time.Millisecond
	defaultPushPullInterval        = 10 * time.Second
	defaultTCPTimeout              = 2 * time.Second
	defaultLeaveTimeout            = time.Second
	defaultRejoinInterval          = 500 * time.Millisecond
	defaultRejoinWindow            = 2 * time.Minute
)

// DeriveKey turns the Secret's value into memberlist's 32-byte AES-256 key
// exactly as MetalLB's speakers do, so that speakers of both keep
// gossiping during a migration with the Secret MetalLB's controller made:
// the first 32 bytes of the value followed by SHA-256 of nothing (MetalLB
// calls sha256.New().Sum(secret), which appends the empty input's digest
// to the secret rather than hashing it). A value of 32 bytes or more is
// thus used as it is, cut to 32; a shorter one is padded with a constant,
// so only its own bytes are secret (the controller creates 128 random
// bytes, base64: 192 bits in the first 32 characters).
func DeriveKey(secret []byte) []byte {
	empty := sha256.Sum256(nil)
	return append(slices.Clone(secret), empty[:]...)[:32]
}

// Members is this speaker's view of which speakers are alive.
type Members struct {
	cfg     Config
	log     logr.Logger
	changes chan struct{}

	mu      sync.Mutex
	ml      *memberlist.Memberlist
	started bool
	pending []string // joins requested before Start

	// crashOnStop makes Start shut down without leaving, as a killed
	// process would; tests use it to exercise failure detection.
	crashOnStop bool

	// departedMu guards departed, which memberlist's callbacks write
	// under memberlist's own locks.
	departedMu sync.Mutex
	departed   map[string]departure
}

// departure is a member that failed or left: where it was and when.
type departure struct {
	addr     string
	since    time.Time
	inFlight bool // a rejoin attempt is running
}

// New validates cfg. It starts nothing: Start does.
func New(cfg Config) (*Members, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("%w: empty node name", ErrInvalidConfig)
	}
	if !cfg.BindAddr.IsValid() || cfg.BindAddr.IsUnspecified() {
		return nil, fmt.Errorf("%w: bind address %v must be the node's address", ErrInvalidConfig, cfg.BindAddr)
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%w: port %d out of range", ErrInvalidConfig, cfg.Port)
	}
	setDefault(&cfg.ProbeInterval, defaultProbeInterval)
	setDefault(&cfg.ProbeTimeout, defaultProbeTimeout)
	setDefault(&cfg.IndirectChecks, defaultIndirectChecks)
	setDefault(&cfg.SuspicionMult, defaultSuspicionMult)
	setDefault(&cfg.SuspicionMaxTimeoutMult, defaultSuspicionMaxTimeoutMult)
	setDefault(&cfg.GossipInterval, defaultGossipInterval)
	setDefault(&cfg.PushPullInterval, defaultPushPullInterval)
	setDefault(&cfg.TCPTimeout, defaultTCPTimeout)
	setDefault(&cfg.LeaveTimeout, defaultLeaveTimeout)
	setDefault(&cfg.RejoinInterval, defaultRejoinInterval)
	setDefault(&cfg.RejoinWindow, defaultRejoinWindow)
	if cfg.ProbeTimeout >= cfg.ProbeInterval {
		return nil, fmt.Errorf("%w: probe timeout %v must be shorter than probe interval %v",
			ErrInvalidConfig, cfg.ProbeTimeout, cfg.ProbeInterval)
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Members{
		cfg:      cfg,
		log:      cfg.Logger.WithValues("node", cfg.NodeName),
		changes:  make(chan struct{}, 1),
		departed: map[string]departure{},
	}, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Start creates the memberlist, joins Config.Peers and anything passed to
// Join earlier, and runs until ctx ends. It then leaves the cluster, so the
// others take over this node's addresses at once, and shuts down.
func (m *Members) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return ErrAlreadyStarted
	}
	m.started = true
	m.mu.Unlock()

	ml, err := memberlist.Create(m.memberlistConfig())
	if err != nil {
		return fmt.Errorf("create memberlist on %s: %w",
			netip.AddrPortFrom(m.cfg.BindAddr, uint16(m.cfg.Port)), err)
	}
	m.mu.Lock()
	m.ml = ml
	peers := append(slices.Clone(m.cfg.Peers), m.pending...)
	m.pending = nil
	m.mu.Unlock()
	m.notify()

	if len(peers) > 0 {
		if n, err := ml.Join(peers); err != nil {
			// The first speaker has nobody to join; later Join calls from
			// peer discovery retry.
			m.log.Info("could not join peers", "peers", peers, "joined", n, "error", err.Error())
		}
	}

	var rejoins sync.WaitGroup
	rejoins.Go(func() { m.rejoinLoop(ctx, ml, &rejoins) })
	// Attempts still running end with the shutdown (their connections
	// fail); wait for them so none outlives Start.
	defer rejoins.Wait()

	<-ctx.Done()
	m.mu.Lock()
	crash := m.crashOnStop
	m.mu.Unlock()
	if crash {
		return ml.Shutdown()
	}
	if err := ml.Leave(m.cfg.LeaveTimeout); err != nil {
		m.log.Info("leave did not reach peers, they will detect the failure instead", "error", err.Error())
	}
	if err := ml.Shutdown(); err != nil {
		return fmt.Errorf("shut down memberlist: %w", err)
	}
	return nil
}

// rejoinLoop contacts members that failed or left recently, each at most
// once at a time, every RejoinInterval.
//
// Memberlist never probes a member it declared dead, and gossips to it only
// while it has news queued, so two sides that declared each other dead
// during a partition (or a node whose link was down) may not notice for a
// long time that they can talk again. A join is a full state exchange: the
// side that finds itself declared dead in the other's state refutes it at
// once, and both views merge. A target that is really gone costs a refused
// or timed-out connection per interval.
func (m *Members) rejoinLoop(ctx context.Context, ml *memberlist.Memberlist, attempts *sync.WaitGroup) {
	tick := time.NewTicker(m.cfg.RejoinInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, d := range m.rejoinTargets(time.Now()) {
			attempts.Go(func() {
				n, err := ml.Join([]string{d.addr})
				m.departedMu.Lock()
				if cur, ok := m.departed[d.name]; ok && cur.addr == d.addr {
					cur.inFlight = false
					m.departed[d.name] = cur
				}
				m.departedMu.Unlock()
				if err == nil && n > 0 {
					m.log.V(1).Info("contacted a departed member again", "peer", d.name, "addr", d.addr)
				}
			})
		}
	}
}

type rejoinTarget struct{ name, addr string }

// rejoinTargets returns the departures of the last RejoinWindow without an
// attempt running, marking them as attempted, and forgets older ones.
func (m *Members) rejoinTargets(now time.Time) []rejoinTarget {
	m.departedMu.Lock()
	defer m.departedMu.Unlock()
	var out []rejoinTarget
	for name, d := range m.departed {
		if now.Sub(d.since) > m.cfg.RejoinWindow {
			delete(m.departed, name)
			continue
		}
		if d.inFlight {
			continue
		}
		d.inFlight = true
		m.departed[name] = d
		out = append(out, rejoinTarget{name: name, addr: d.addr})
	}
	return out
}

func (m *Members) departedMember(n *memberlist.Node) {
	if n.Name == m.cfg.NodeName {
		return
	}
	m.departedMu.Lock()
	defer m.departedMu.Unlock()
	m.departed[n.Name] = departure{addr: n.FullAddress().Addr, since: time.Now()}
}

func (m *Members) returnedMember(n *memberlist.Node) {
	m.departedMu.Lock()
	defer m.departedMu.Unlock()
	delete(m.departed, n.Name)
}

// Join contacts the given peers (host or host:port, default port the
// configured one) and merges their view. Called before Start, the peers are
// joined when Start runs. It returns how many peers answered; joining a
// member already known is harmless.
func (m *Members) Join(peers []string) (int, error) {
	m.mu.Lock()
	ml := m.ml
	if ml == nil {
		m.pending = append(m.pending, peers...)
		m.mu.Unlock()
		return 0, nil
	}
	m.mu.Unlock()
	n, err := ml.Join(peers)
	if err != nil {
		return n, fmt.Errorf("join %v: %w", peers, err)
	}
	return n, nil
}

// Alive returns the sorted names of the members not known to be dead or
// gone, this one included. Suspected members still count: a suspect that is
// merely slow refutes within the suspicion timeout, and counting it out would
// move its addresses back and forth. Before Start it returns nil.
func (m *Members) Alive() []string {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return nil
	}
	nodes := ml.Members()
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// LocalAddr is the address and port memberlist listens on, valid once
// Start has created it (useful with Port 0).
func (m *Members) LocalAddr() (netip.AddrPort, bool) {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(ml.LocalNode().FullAddress().Addr)
	return ap, err == nil
}

// Changes receives a value after membership changed (a member joined, left,
// died or was updated). Notifications coalesce: one value may stand for
// several changes, so the receiver reads Alive afresh.
func (m *Members) Changes() <-chan struct{} { return m.changes }

func (m *Members) notify() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

func (m *Members) memberlistConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = m.cfg.NodeName
	c.BindAddr = m.cfg.BindAddr.String()
	c.BindPort = m.cfg.Port
	c.AdvertiseAddr = m.cfg.BindAddr.String()
	c.AdvertisePort = m.cfg.Port
	c.ProbeInterval = m.cfg.ProbeInterval
	c.ProbeTimeout = m.cfg.ProbeTimeout
	c.IndirectChecks = m.cfg.IndirectChecks
	c.SuspicionMult = m.cfg.SuspicionMult
	c.SuspicionMaxTimeoutMult = m.cfg.SuspicionMaxTimeoutMult
	c.GossipInterval = m.cfg.GossipInterval
	c.PushPullInterval = m.cfg.PushPullInterval
	c.TCPTimeout = m.cfg.TCPTimeout
	c.Events = events{m}
	c.Logger = newStdLogger(m.cfg.Logger)
	c.LogOutput = nil
	if len(m.cfg.SecretKey) > 0 {
		c.SecretKey = DeriveKey(m.cfg.SecretKey)
		c.GossipVerifyIncoming = true
		c.GossipVerifyOutgoing = true
	}
	return c
}

// events forwards memberlist's callbacks, which run under its locks, as
// non-blocking notifications.
type events struct{ m *Members }

func (e events) NotifyJoin(n *memberlist.Node) {
	e.m.returnedMember(n)
	e.m.notify()
}

// NotifyLeave cannot tell a failure from a clean leave (the node's State is
// not filled in): both are rejoined for a while, which for a speaker that
// left costs a refused connection per interval.
func (e events) NotifyLeave(n *memberlist.Node) {
	e.m.departedMember(n)
	e.m.notify()
}

func (e events) NotifyUpdate(*memberlist.Node) { e.m.notify() }

// GoString keeps the secret out of %#v.
func (c Config) GoString() string { return c.String() }

// String keeps the secret out of anything that prints a Config.
func (c Config) String() string {
	return "membership.Config{NodeName: " + strconv.Quote(c.NodeName) +
		", BindAddr: " + c.BindAddr.String() + ", Port: " + strconv.Itoa(c.Port) + "}"
}

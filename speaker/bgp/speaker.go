// Package bgp is the speaker's BGP mode: an embedded BGP server that peers
// with routers and advertises service addresses to them.
//
// The speaker is level-triggered: SyncPeers and SyncPaths take the complete
// desired state and the speaker diffs it against what it has configured. It
// never installs or re-advertises routes it receives.
//
// Per-peer targeting. The embedded server keeps one routing table, so a
// prefix is one path whatever the number of peers. Each path carries, as an
// attribute, one private marker per peer it is meant for, and one export
// statement per peer (neighbour address AND that peer's marker) strips the
// markers and accepts; everything else is rejected on export. Changing the
// peers a prefix goes to therefore changes the path itself, so the server
// re-evaluates it for every peer: new targets get an update, dropped targets
// a withdrawal, with no flap for the peers that keep it. The export policy
// changes only when peers are added or removed.
//
// Next hops. Paths are originated with an unspecified next hop, so each
// session advertises its own local address (SourceAddress when set). IPv4
// sessions carry IPv4 paths and IPv6 sessions carry IPv6 paths. A path of
// the other family is offered over a session only when the peer is DualStack
// and names a next hop of that family (PeerConfig.NextHopIPv4 /
// NextHopIPv6): an IPv4 session cannot supply a usable IPv6 next hop by
// itself, and an IPv4-mapped one is not routable at the router.
package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Sentinel errors; SyncPeers and SyncPaths wrap them with the peer or prefix.
var (
	// ErrUnsupported: a peer setting the embedded BGP server cannot honour.
	ErrUnsupported = errors.New("not supported by the embedded BGP server")
	// ErrInvalid: a peer setting or path that is wrong in itself.
	ErrInvalid = errors.New("invalid")
	// ErrConflictingAttributes: two paths for one prefix ask for different
	// attributes. The speaker advertises the merge (union of communities,
	// highest local preference) and reports it.
	ErrConflictingAttributes = errors.New("conflicting attributes for one prefix")
)

// md5Hint ends the last error of a session with TCP MD5 that cannot
// connect.
const md5Hint = "; TCP MD5 is on for this session: a router whose password differs drops the connection unanswered"

// prefixLimitError is the last error of a session shut down because the
// router sent too many prefixes.
var prefixLimitError = fmt.Sprintf("the router sent more than %d prefixes of one address family; "+
	"ironlb imports no routes, so the session was shut down (CEASE, maximum number of prefixes reached) "+
	"and stays down until the peer is configured again or the speaker restarts: "+
	"filter the routes the router sends to this node", MaxReceivedPrefixes)

// Dynamic ASN modes of PeerConfig.DynamicASN.
const (
	DynamicASNInternal = "internal"
	DynamicASNExternal = "external"
)

// PeerConfig is one BGP session to a router.
type PeerConfig struct {
	// Name identifies the peer in Path.Peers, PeerState and errors.
	Name    string
	Address netip.Addr
	// Port is the router's port; 0 means 179.
	Port uint16
	// MyASN is this node's ASN on the session.
	MyASN uint32
	// PeerASN is the router's ASN; 0 when DynamicASN is set.
	PeerASN uint32
	// DynamicASN is "internal" (the router's ASN is MyASN), "external" (any
	// ASN is accepted) or "" (PeerASN applies).
	DynamicASN    string
	SourceAddress netip.Addr
	// RouterID must be unset or equal to Config.RouterID: the embedded
	// server has one router identifier for all sessions.
	RouterID netip.Addr
	// Timers are whole seconds (the protocol's unit); zero means default
	// (hold 90s, keepalive a third of hold, connect retry 120s).
	HoldTime, KeepaliveTime, ConnectTime time.Duration
	EBGPMultiHop                         bool
	// Password enables TCP MD5 signatures. It is never logged.
	Password string
	// DualStack offers both address families on the session.
	DualStack bool
	// NextHopIPv4 and NextHopIPv6 are this node's next hop for paths of the
	// family the session's own address is not; required by DualStack for
	// the other family.
	NextHopIPv4, NextHopIPv6 netip.Addr
	// BFD watches the path to the router; its zero value means none.
	BFD BFDConfig
}

// BFDConfig is a single-hop BFD session (RFC 5880, 5881) in asynchronous
// mode alongside the BGP session: when it fails the BGP session is reset at
// once instead of at the end of the hold time.
type BFDConfig struct {
	Enabled bool
	// ReceiveInterval is the slowest rate at which this node wants BFD
	// packets; TransmitInterval the fastest rate at which it sends them.
	// Both are whole microseconds between 10 ms and 60 s.
	ReceiveInterval, TransmitInterval time.Duration
	// DetectMultiplier is how many packets may be missed before the session
	// is declared down: 2 to 255.
	DetectMultiplier uint8
}

// Path is one prefix to advertise.
type Path struct {
	Prefix netip.Prefix
	// LocalPref is sent to iBGP peers only; 0 means the default (100).
	LocalPref        uint32
	Communities      []uint32
	LargeCommunities [][3]uint32
	// Peers are PeerConfig names; empty means every peer. Names of peers not
	// (yet) configured are kept and take effect when the peer appears.
	Peers []string
}

// PeerState is what the speaker knows of one session.
type PeerState struct {
	Name    string
	Address netip.Addr
	// Up is true when the session is Established.
	Up bool
	// State is the BGP finite state machine state, e.g. "established".
	State string
	// Advertised counts the prefixes currently sent to the peer.
	Advertised int
	// UpdatesSent counts the UPDATE messages sent over the current
	// session's configuration (it restarts when the peer is re-created).
	UpdatesSent uint64
	// LastError is the configuration error or the last reason the session
	// went down; empty when none.
	LastError string
	// BFDState is the BFD session's state ("up", "down", "init",
	// "admindown"); empty when the peer has no BFD.
	BFDState string
}

// Config configures a Speaker.
type Config struct {
	// RouterID is the BGP identifier (IPv4), usually the node's address.
	RouterID netip.Addr
	// ListenPort is where routers may open sessions to this node. 0 and -1
	// mean do not listen: sessions are opened by this node only.
	ListenPort int32
	Logger     logr.Logger
}

// Speaker is the node's BGP speaker.
type Speaker struct {
	cfg Config
	log logr.Logger

	mu sync.Mutex
	// r is the running server; nil outside Start.
	r *router
	// Desired state, kept while stopped and re-applied by Start.
	peers   map[string]PeerConfig
	paths   []Path
	peerErr map[string]error
	// Applied state.
	applied     map[string]PeerConfig // by name
	markers     map[string]uint32     // peer name -> marker id
	appliedPath map[netip.Prefix]advert
	// downMu guards lastDown apart from mu: the server reports session
	// failures from its own goroutines, also while mu is held to stop it.
	downMu sync.Mutex
	// lastDown is the last session-down reason per neighbour address.
	lastDown map[netip.Addr]string
}

// New validates cfg. It starts nothing: Start runs the server.
func New(cfg Config) (*Speaker, error) {
	if !cfg.RouterID.Is4() {
		return nil, fmt.Errorf("new bgp speaker: router id %v: %w: must be an IPv4 address", cfg.RouterID, ErrInvalid)
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = -1
	}
	if cfg.ListenPort < -1 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("new bgp speaker: listen port %d: %w", cfg.ListenPort, ErrInvalid)
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Speaker{
		cfg:         cfg,
		log:         cfg.Logger,
		peers:       map[string]PeerConfig{},
		peerErr:     map[string]error{},
		applied:     map[string]PeerConfig{},
		markers:     map[string]uint32{},
		appliedPath: map[netip.Prefix]advert{},
		lastDown:    map[netip.Addr]string{},
	}, nil
}

// Start runs the BGP server until ctx ends, then withdraws every path and
// closes every session before it returns. The server's event loop goroutine
// cannot be stopped and stays parked after Start returns.
func (s *Speaker) Start(ctx context.Context) error {
	r, err := startRouter(s.cfg, s.log, s.noteDown)
	if err != nil {
		return fmt.Errorf("start bgp speaker: %w", err)
	}
	s.mu.Lock()
	s.r = r
	err = s.reconcileLocked(context.WithoutCancel(ctx))
	s.mu.Unlock()
	if err != nil {
		// Configuration errors are reported through SyncPeers and
		// PeerStates; the speaker keeps running with what is valid.
		s.log.Error(err, "initial bgp configuration incomplete")
	}

	<-ctx.Done()

	s.mu.Lock()
	defer s.mu.Unlock()
	stopCtx := context.WithoutCancel(ctx)
	err = r.withdrawAll(stopCtx)
	r.stop(stopCtx)
	s.r = nil
	clear(s.applied)
	clear(s.markers)
	clear(s.appliedPath)
	if err != nil {
		return fmt.Errorf("stop bgp speaker: %w", err)
	}
	return nil
}

// SyncPeers makes the sessions match peers: new ones are added, gone ones
// removed (their routes withdrawn by closing the session), changed ones
// re-created. A peer with a setting the server cannot honour is left out and
// reported in the returned error, which names the peer and field; the other
// peers are still applied.
func (s *Speaker) SyncPeers(ctx context.Context, peers []PeerConfig) error {
	desired := make(map[string]PeerConfig, len(peers))
	errs := map[string]error{}
	byAddr := map[netip.Addr]string{}
	for _, p := range peers {
		if _, dup := desired[p.Name]; dup {
			errs[p.Name] = fmt.Errorf("peer %q: name: %w: duplicate", p.Name, ErrInvalid)
			continue
		}
		if err := validatePeer(p, s.cfg.RouterID); err != nil {
			errs[p.Name] = err
			continue
		}
		if other, dup := byAddr[p.Address]; dup {
			errs[p.Name] = fmt.Errorf("peer %q: address: %w: %v already used by peer %q", p.Name, ErrInvalid, p.Address, other)
			continue
		}
		byAddr[p.Address] = p.Name
		desired[p.Name] = p
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers = desired
	s.peerErr = errs
	var err error
	if s.r != nil {
		err = s.reconcileLocked(ctx)
	}
	return errors.Join(append(sortedErrs(errs), err)...)
}

// SyncPaths makes the advertised paths match paths.
func (s *Speaker) SyncPaths(ctx context.Context, paths []Path) error {
	var errs []error
	valid := make([]Path, 0, len(paths))
	for _, p := range paths {
		if !p.Prefix.IsValid() {
			errs = append(errs, fmt.Errorf("path %v: prefix: %w", p.Prefix, ErrInvalid))
			continue
		}
		valid = append(valid, p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paths = valid
	if s.r != nil {
		errs = append(errs, s.reconcileLocked(ctx))
	} else {
		_, err := desiredAdverts(valid, nil, nil)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// PeerStates reports every configured peer, and peers rejected by SyncPeers
// with their error, sorted by name.
func (s *Speaker) PeerStates(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live map[netip.Addr]sessionState
	if s.r != nil {
		var err error
		if live, err = s.r.sessions(ctx); err != nil {
			return nil, fmt.Errorf("list bgp peers: %w", err)
		}
	}
	out := make([]PeerState, 0, len(s.peers)+len(s.peerErr))
	for name, p := range s.peers {
		st := PeerState{Name: name, Address: p.Address, State: "idle", LastError: s.lastError(p.Address)}
		if l, ok := live[p.Address]; ok {
			st.Up, st.State, st.Advertised, st.UpdatesSent = l.up, l.state, l.advertised, l.updatesSent
			if p.BFD.Enabled {
				st.BFDState = cmp.Or(l.bfdState, "down")
			}
			if l.prefixLimited {
				st.LastError = prefixLimitError
			}
		}
		if p.Password != "" && !st.Up && strings.HasPrefix(st.LastError, msgConnectFailed) {
			// A router whose password differs drops the signed connection
			// without a word, so all the server sees is a timeout.
			st.LastError += md5Hint
		}
		out = append(out, st)
	}
	for name, err := range s.peerErr {
		out = append(out, PeerState{Name: name, State: "unconfigured", LastError: err.Error()})
	}
	slices.SortFunc(out, func(a, b PeerState) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// noteDown records why a session went down; called from the server's logger.
func (s *Speaker) noteDown(addr netip.Addr, reason string) {
	s.downMu.Lock()
	s.lastDown[addr] = reason
	s.downMu.Unlock()
}

func (s *Speaker) lastError(addr netip.Addr) string {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	return s.lastDown[addr]
}

// reconcileLocked applies the desired peers and paths to the running server.
// Order matters: sessions and the export policy first, so a path's markers
// always refer to statements that exist.
func (s *Speaker) reconcileLocked(ctx context.Context) error {
	var errs []error
	// Remove gone or changed peers.
	for name, old := range s.applied {
		if want, ok := s.peers[name]; ok && peerEqual(old, want) {
			continue
		}
		if err := s.r.deletePeer(ctx, old); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: %w", name, err))
			continue
		}
		delete(s.applied, name)
	}
	// Markers follow names; ids are reused smallest-first.
	for name := range s.markers {
		if _, ok := s.peers[name]; !ok {
			delete(s.markers, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		if _, ok := s.markers[name]; !ok {
			s.markers[name] = freeMarker(s.markers)
		}
	}
	if err := s.r.setExportPolicy(ctx, s.peers, s.markers); err != nil {
		return errors.Join(append(errs, fmt.Errorf("set export policy: %w", err))...)
	}
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		if _, ok := s.applied[name]; ok {
			continue
		}
		p := s.peers[name]
		if err := s.r.addPeer(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: %w", name, err))
			continue
		}
		s.downMu.Lock()
		delete(s.lastDown, p.Address)
		s.downMu.Unlock()
		s.applied[name] = p
	}

	want, err := desiredAdverts(s.paths, s.applied, s.markers)
	if err != nil {
		errs = append(errs, err)
	}
	for pfx, old := range s.appliedPath {
		if _, ok := want[pfx]; ok {
			continue
		}
		if err := s.r.withdraw(ctx, pfx); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %v: %w", pfx, err))
			continue
		}
		s.log.V(1).Info("withdrew path", "ip", pfx.String(), "peers", old.peers)
		delete(s.appliedPath, pfx)
	}
	for _, pfx := range slices.SortedFunc(maps.Keys(want), netip.Prefix.Compare) {
		a := want[pfx]
		if old, ok := s.appliedPath[pfx]; ok && old.equal(a) {
			continue
		}
		if err := s.r.advertise(ctx, pfx, a); err != nil {
			errs = append(errs, fmt.Errorf("advertise %v: %w", pfx, err))
			continue
		}
		s.log.V(1).Info("advertised path", "ip", pfx.String(), "peers", a.peers)
		s.appliedPath[pfx] = a
	}
	return errors.Join(errs...)
}

func freeMarker(used map[string]uint32) uint32 {
	taken := make(map[uint32]bool, len(used))
	for _, id := range used {
		taken[id] = true
	}
	for id := uint32(1); ; id++ {
		if !taken[id] {
			return id
		}
	}
}

func sortedErrs(m map[string]error) []error {
	out := make([]error, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}

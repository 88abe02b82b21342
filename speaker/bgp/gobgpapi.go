package bgp

// This file alone talks to the embedded gobgp server and converts to and
// from its API types.

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const (
	importPolicy = "ironlb-import"
	exportPolicy = "ironlb-export"
	anyIPv4Set   = "ironlb-any-ipv4"
	anyIPv6Set   = "ironlb-any-ipv6"
	// markerGlobal is the reserved global administrator 4294967295 (RFC
	// 8092), which no operator assigns, and markerLocal spells "IRLB": a
	// marker large community 4294967295:1230130242:<peer id> never collides
	// with communities users configure, and never leaves the node.
	markerGlobal = 4294967295
	markerLocal  = 1230130242
)

var markerRegexp = fmt.Sprintf("^%d:%d:[0-9]+$", markerGlobal, markerLocal)

// MaxReceivedPrefixes bounds the prefixes a router may send per address
// family. ironlb imports no routes, but the server keeps what it receives
// (its Adj-RIB-In) before the import policy rejects it, so without a bound a
// router, or whatever feeds it, could fill the node's memory. A router
// sending more is told so (CEASE, maximum number of prefixes reached) and
// its session stays down until the peer is configured again or the speaker
// restarts; PeerState.LastError says why. The bound leaves room for a
// router that reflects every node's service addresses back to it.
const MaxReceivedPrefixes = 10000

// router is the running gobgp server.
type router struct {
	srv *server.BgpServer
}

// sessionState is one neighbour as the server reports it.
type sessionState struct {
	up          bool
	state       string
	advertised  int
	updatesSent uint64
	// prefixLimited: the session was shut down because the router sent
	// more than MaxReceivedPrefixes.
	prefixLimited bool
	// bfdState is the BFD session's state; empty when there is none.
	bfdState string
}

func startRouter(cfg Config, log logr.Logger, noteDown func(netip.Addr, string)) (*router, error) {
	srv := server.NewBgpServer(server.LoggerOption(newServerLogger(log.WithName("gobgp"), noteDown), nil))
	// Serve returns once the server is stopped.
	go srv.Serve()
	ctx := context.Background()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		// Every session sets its own local ASN; the global one is only a
		// placeholder the server requires.
		Asn:        64512,
		RouterId:   cfg.RouterID.String(),
		ListenPort: cfg.ListenPort,
	}})
	if err != nil {
		return nil, fmt.Errorf("start bgp server: %w", err)
	}
	r := &router{srv: srv}
	if err := r.setExportPolicy(ctx, nil, nil); err != nil {
		r.stop(ctx)
		return nil, err
	}
	// Received routes are rejected on import, so they are neither installed
	// (there is no zebra) nor re-advertised; local paths pass.
	for _, a := range []*api.PolicyAssignment{
		{Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
		{Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT, Policies: []*api.Policy{{Name: exportPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
	} {
		if err := srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: a}); err != nil {
			r.stop(ctx)
			return nil, fmt.Errorf("assign %s policy: %w", a.Direction, err)
		}
	}
	return r, nil
}

// stop closes every session and stops the server, its BFD sessions
// included.
func (r *router) stop(context.Context) {
	r.srv.Stop()
}

// setExportPolicy rebuilds the whole policy: one statement per peer that
// accepts paths carrying the peer's marker, strips the markers and, for
// dual-stack sessions, sets the other family's next hop.
func (r *router) setExportPolicy(ctx context.Context, peers map[string]PeerConfig, markers map[string]uint32) error {
	sets := []*api.DefinedSet{
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: anyIPv4Set, Prefixes: []*api.Prefix{{IpPrefix: "0.0.0.0/0", MaskLengthMin: 0, MaskLengthMax: 32}}},
		{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: anyIPv6Set, Prefixes: []*api.Prefix{{IpPrefix: "::/0", MaskLengthMin: 0, MaskLengthMax: 128}}},
	}
	var stmts []*api.Statement
	for _, name := range slices.Sorted(maps.Keys(peers)) {
		p, id := peers[name], markers[name]
		nset := "ironlb-peer-" + strconv.FormatUint(uint64(id), 10)
		mset := "ironlb-marker-" + strconv.FormatUint(uint64(id), 10)
		sets = append(sets,
			&api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nset, List: []string{netip.PrefixFrom(p.Address, p.Address.BitLen()).String()}},
			&api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY, Name: mset, List: []string{fmt.Sprintf("^%d:%d:%d$", markerGlobal, markerLocal, id)}},
		)
		cond := func() *api.Conditions {
			return &api.Conditions{
				NeighborSet:       &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: nset},
				LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: mset},
			}
		}
		strip := func() *api.Actions {
			return &api.Actions{
				RouteAction:    api.RouteAction_ROUTE_ACTION_ACCEPT,
				LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: []string{markerRegexp}},
			}
		}
		if nh, ok := crossFamilyNextHop(p); ok {
			c, a := cond(), strip()
			c.PrefixSet = &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: anyIPv4Set}
			if nh.Is6() {
				c.PrefixSet.Name = anyIPv6Set
			}
			a.Nexthop = &api.NexthopAction{Address: nh.String()}
			stmts = append(stmts, &api.Statement{Name: nset + "-other-family", Conditions: c, Actions: a})
		}
		stmts = append(stmts, &api.Statement{Name: nset, Conditions: cond(), Actions: strip()})
	}
	err := r.srv.SetPolicies(ctx, &api.SetPoliciesRequest{
		DefinedSets: sets,
		Policies: []*api.Policy{
			{Name: importPolicy, Statements: []*api.Statement{{
				Name:       importPolicy + "-local",
				Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
				Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
			}}},
			{Name: exportPolicy, Statements: stmts},
		},
	})
	if err != nil {
		return fmt.Errorf("set bgp policies: %w", err)
	}
	return nil
}

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

func toAPIPeer(p PeerConfig) *api.Peer {
	peerASN := p.PeerASN
	if p.DynamicASN == DynamicASNInternal {
		// The router must be in our AS: pinning the ASN enforces it.
		peerASN = p.MyASN
	}
	// An ASN of 0 lets the server accept whatever the router announces.
	afiSafi := func(a netip.Addr) *api.AfiSafi {
		return &api.AfiSafi{
			Config:       &api.AfiSafiConfig{Family: family(a), Enabled: true},
			PrefixLimits: &api.PrefixLimit{Family: family(a), MaxPrefixes: MaxReceivedPrefixes},
		}
	}
	families := []*api.AfiSafi{afiSafi(p.Address)}
	if p.DualStack {
		other := netip.IPv6Unspecified()
		if p.Address.Is6() {
			other = netip.IPv4Unspecified()
		}
		families = append(families, afiSafi(other))
	}
	port := uint32(p.Port)
	if port == 0 {
		port = bgp.BGP_PORT
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			LocalAsn:        p.MyASN,
			PeerAsn:         peerASN,
			AuthPassword:    p.Password,
			Description:     p.Name,
		},
		Transport: &api.Transport{RemotePort: port},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(effectiveHold(p) / time.Second),
			KeepaliveInterval: uint64(effectiveKeepalive(p) / time.Second),
			ConnectRetry:      uint64(p.ConnectTime / time.Second),
		}},
		AfiSafis: families,
	}
	if p.SourceAddress.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultiHop {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if p.BFD.Enabled {
		ap.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(p.BFD.TransmitInterval / time.Microsecond),
			RequiredMinimumReceive:   uint32(p.BFD.ReceiveInterval / time.Microsecond),
			DetectionMultiplier:      uint32(p.BFD.DetectMultiplier),
		}
	}
	return ap
}

func (r *router) addPeer(ctx context.Context, p PeerConfig) error {
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(p)}); err != nil {
		return fmt.Errorf("add bgp neighbour %v: %w", p.Address, err)
	}
	return nil
}

func (r *router) deletePeer(ctx context.Context, p PeerConfig) error {
	if err := r.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
		return fmt.Errorf("delete bgp neighbour %v: %w", p.Address, err)
	}
	return nil
}

// toAPIPath builds the path with an unspecified next hop, which the server
// replaces with each session's local address.
func toAPIPath(pfx netip.Prefix, a advert, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(pfx)
	if err != nil {
		return nil, fmt.Errorf("encode path %v: %w", pfx, err)
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
	}
	fam := bgp.RF_IPv4_UC
	if pfx.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, fmt.Errorf("encode path %v: next hop: %w", pfx, err)
		}
		attrs = append(attrs, nh)
	} else {
		fam = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("encode path %v: next hop: %w", pfx, err)
		}
		attrs = append(attrs, mp)
	}
	if a.localPref != 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(a.localPref))
	}
	if len(a.communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(a.communities))
	}
	large := make([]*bgp.LargeCommunity, 0, len(a.large)+len(a.markers))
	for _, c := range a.large {
		large = append(large, bgp.NewLargeCommunity(c[0], c[1], c[2]))
	}
	for _, id := range a.markers {
		large = append(large, bgp.NewLargeCommunity(markerGlobal, markerLocal, id))
	}
	if len(large) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(large))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw, Age: time.Now().Unix()}, nil
}

func (r *router) advertise(_ context.Context, pfx netip.Prefix, a advert) error {
	p, err := toAPIPath(pfx, a, false)
	if err != nil {
		return err
	}
	if _, err := r.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		return fmt.Errorf("add path: %w", err)
	}
	return nil
}

func (r *router) withdraw(_ context.Context, pfx netip.Prefix) error {
	p, err := toAPIPath(pfx, advert{}, true)
	if err != nil {
		return err
	}
	if err := r.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		return fmt.Errorf("delete path: %w", err)
	}
	return nil
}

// withdrawAll removes every local path; the server sends the withdrawals.
func (r *router) withdrawAll(context.Context) error {
	if err := r.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
		return fmt.Errorf("delete all paths: %w", err)
	}
	return nil
}

func (r *router) sessions(ctx context.Context) (map[netip.Addr]sessionState, error) {
	out := map[netip.Addr]sessionState{}
	err := r.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil {
			return
		}
		addr, err := netip.ParseAddr(p.State.NeighborAddress)
		if err != nil {
			return
		}
		st := sessionState{
			up:    p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED,
			state: sessionStateName(p.State.SessionState),
			// The server marks a session it shut down for the prefix
			// limit with this admin state.
			prefixLimited: p.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT,
		}
		if b := p.State.BfdState; b != nil {
			st.bfdState = bfdStateName(b.SessionState)
		}
		if m := p.State.Messages; m != nil && m.Sent != nil {
			st.updatesSent = m.Sent.Update
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				st.advertised += int(af.State.Advertised)
			}
		}
		out[addr.Unmap()] = st
	})
	return out, err
}

func sessionStateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

func bfdStateName(s api.BfdSessionState) string {
	switch s {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return "down"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admindown"
	}
	return ""
}

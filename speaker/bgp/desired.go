package bgp

// This file is the pure translation from the resolved configuration to what
// one node's speaker must do: which sessions (DesiredPeers) and which paths
// (DesiredPaths). It reads policy.Config and knows nothing of Kubernetes.

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/internal/policy"
)

// Node is what the translation needs to know of the node it runs for.
type Node struct {
	Name   string
	Labels map[string]string
	// Addresses are the node's InternalIP addresses in the Node's order. The
	// first IPv4 one is the default router ID; the first one of a family is
	// the next hop of that family on dual-stack sessions of the other one.
	Addresses []netip.Addr
}

// ServiceAddrs is one Service's load-balancer addresses as this node sees
// them.
type ServiceAddrs struct {
	// Service is "namespace/name".
	Service string
	// Labels of the Service, matched by serviceSelectors.
	Labels map[string]string
	// Pool is the pool the addresses were allocated from, a lookup hint
	// only: the pool whose ranges contain an address is the one that counts,
	// so a stale annotation cannot bring an address under the advertisements
	// of a pool it is not in.
	Pool      string
	Addresses []netip.Addr
	// Eligible is the caller's verdict that this node may announce the
	// Service: it has a ready endpoint (a local one with
	// externalTrafficPolicy Local) and the node is not excluded. Ineligible
	// services get no paths, so syncing the result withdraws them.
	Eligible bool
}

// PeerError is a BGPPeer setting this node's speaker cannot honour. It names
// the peer, the API field and its value so that the caller can put it in
// ConfigurationState and Events. errors.Is(err, ErrUnsupported) (or
// ErrInvalid) holds.
type PeerError struct {
	Peer      string
	Namespace string
	// Field is the API field, e.g. "spec.vrf"; Value its value as written.
	Field string
	Value string
	// LeftOut is true when the peer gets no session on this node, false
	// when the session is configured without the setting.
	LeftOut bool
	Err     error
	// Reason says why, as the end of a sentence.
	Reason string
}

func (e *PeerError) Error() string {
	outcome := "the session is configured without it"
	if e.LeftOut {
		outcome = "the peer is not configured on this node"
	}
	return fmt.Sprintf("peer %q: %s %q: %v: %s; %s", e.Peer, e.Field, e.Value, e.Err, e.Reason, outcome)
}

func (e *PeerError) Unwrap() error { return e.Err }

// The hold time the protocol's default and the session's fallback when
// the peer asks for none (see DesiredPeers).
const defaultHoldTime = 90 * time.Second

// DesiredPeers returns the sessions this node must have: one per peer whose
// nodeSelectors match the node, in the Config's order (by name). Settings the
// embedded server cannot honour come back as *PeerError, sorted by peer and
// field. Whether the peer is still configured depends on what doing without
// the setting would mean:
//
//   - vrf: left out. The session would run in the default routing domain, so
//     routes meant for a VRF would reach another network.
//   - interface (unnumbered BGP): left out; there is no address to dial.
//   - routerID: one router ID serves every session of the node. It is the
//     routerID the node's peers set when they all agree, else the node's
//     first IPv4 address; a peer asking for another one is left out, and so
//     is every peer when the node has no IPv4 address and none is set.
//   - bfdProfile: BFD runs single-hop in asynchronous mode with the
//     profile's receiveInterval, transmitInterval and detectMultiplier.
//     echoMode and passiveMode are reported and left off (the session is
//     active, without echo); a minimumTtl other than the default 254 is
//     reported and not enforced. On an ebgpMultiHop peer BFD is reported
//     and left off (single-hop BFD only): failures are then found by the
//     hold timer, later but still found.
//   - enableGracefulRestart: configured without. The router then drops the
//     routes at once when the speaker restarts, so traffic never goes to a
//     node that is not announcing; only the restart is less smooth.
//   - holdTime 0 (no keepalives): configured with the default 90 s, which
//     the router may still negotiate down to 0; it only lets a dead session
//     be noticed.
//   - dualStackAddressFamily on a node without an address of the other
//     family: configured for its own family only, as there is no next hop
//     to give the router for the other.
//
// Timers are rounded down to the protocol's whole seconds; a keepalive
// under a second becomes one second, not "default".
func DesiredPeers(node Node, cfg policy.Config) ([]PeerConfig, []error) {
	var matched []*policy.Peer
	for i := range cfg.Peers {
		if cfg.Peers[i].MatchesNode(node.Labels) {
			matched = append(matched, &cfg.Peers[i])
		}
	}
	routerID, routerIDSource := nodeRouterID(node, matched)
	v4, v6 := firstOfFamily(node.Addresses)

	var peers []PeerConfig
	var errs []*PeerError
	for _, p := range matched {
		report := func(leftOut bool, field, value string, sentinel error, reason string) {
			errs = append(errs, &PeerError{Peer: p.Name, Namespace: p.Namespace, Field: field, Value: value, LeftOut: leftOut, Err: sentinel, Reason: reason})
		}
		leftOut := false
		if p.VRF != "" {
			report(true, "spec.vrf", p.VRF, ErrUnsupported, "the embedded BGP server runs sessions in the default VRF only")
			leftOut = true
		}
		switch {
		case p.Interface != "":
			report(true, "spec.interface", p.Interface, ErrUnsupported, "unnumbered sessions are not supported; set spec.peerAddress")
			leftOut = true
		case !p.Address.IsValid():
			report(true, "spec.peerAddress", "", ErrInvalid, "is not set")
			leftOut = true
		}
		switch {
		case !routerID.IsValid():
			report(true, "spec.routerID", "", ErrInvalid, fmt.Sprintf("node %q has no IPv4 address to use as the BGP router ID; set spec.routerID", node.Name))
			leftOut = true
		case p.RouterID.IsValid() && p.RouterID != routerID:
			report(true, "spec.routerID", p.RouterID.String(), ErrUnsupported,
				fmt.Sprintf("one router ID serves every session of node %q, and it is %v (%s)", node.Name, routerID, routerIDSource))
			leftOut = true
		}
		if leftOut {
			continue
		}

		pc := PeerConfig{
			Name:          p.Name,
			Address:       p.Address,
			Port:          cmp.Or(p.Port, 179),
			MyASN:         p.MyASN,
			PeerASN:       p.ASN,
			DynamicASN:    p.DynamicASN,
			SourceAddress: p.SourceAddress,
			RouterID:      routerID,
			HoldTime:      p.HoldTime.Truncate(time.Second),
			KeepaliveTime: p.KeepaliveTime.Truncate(time.Second),
			ConnectTime:   p.ConnectTime.Truncate(time.Second),
			EBGPMultiHop:  p.EBGPMultiHop,
			Password:      p.Password,
			DualStack:     p.DualStackAddressFamily,
		}
		if pc.KeepaliveTime == 0 && p.KeepaliveTime > 0 {
			pc.KeepaliveTime = time.Second
		}
		if pc.HoldTime == 0 {
			report(false, "spec.holdTime", p.HoldTime.String(), ErrUnsupported,
				fmt.Sprintf("sessions without keepalives are not supported; the session proposes a hold time of %v", defaultHoldTime))
			pc.HoldTime, pc.KeepaliveTime = defaultHoldTime, defaultHoldTime/3
		}
		if p.BFDProfile != "" {
			pc.BFD = desiredBFD(cfg.BFDProfiles[p.BFDProfile], p.EBGPMultiHop, func(field, value, reason string) {
				report(false, field, value, ErrUnsupported, reason)
			})
		}
		if p.EnableGracefulRestart {
			report(false, "spec.enableGracefulRestart", "true", ErrUnsupported, "graceful restart is not available; the router withdraws the routes when the speaker restarts")
		}
		if pc.DualStack {
			other, family := v6, "IPv6"
			if p.Address.Is6() {
				other, family = v4, "IPv4"
			}
			if other.IsValid() {
				if other.Is4() {
					pc.NextHopIPv4 = other
				} else {
					pc.NextHopIPv6 = other
				}
			} else {
				report(false, "spec.dualStackAddressFamily", "true", ErrUnsupported,
					fmt.Sprintf("node %q has no %s address to give the router as next hop; the session carries its own family only", node.Name, family))
				pc.DualStack = false
			}
		}
		peers = append(peers, pc)
	}

	slices.SortStableFunc(errs, func(a, b *PeerError) int {
		return cmp.Or(cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Field, b.Field))
	})
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	if len(out) == 0 {
		out = nil
	}
	return peers, out
}

// desiredBFD is the BFD session a peer with this profile gets; what the
// embedded server's BFD cannot do is reported (field, value, reason) and
// left off. A profile the policy could not resolve never reaches here.
func desiredBFD(prof policy.BFDProfile, multihop bool, report func(field, value, reason string)) BFDConfig {
	if multihop {
		report("spec.bfdProfile", prof.Name, "the embedded BGP server runs single-hop BFD only (RFC 5881), not on an ebgpMultiHop session; failures are detected by the hold timer")
		return BFDConfig{}
	}
	field := "BFDProfile " + prof.Name + " spec."
	if prof.EchoMode {
		report(field+"echoMode", "true", "the embedded BGP server's BFD has no echo function; BFD runs in asynchronous mode")
	}
	if prof.PassiveMode {
		report(field+"passiveMode", "true", "the embedded BGP server's BFD always sends control packets; the session is active")
	}
	if prof.MinimumTTL != v1beta1.DefaultBFDMinimumTTL {
		report(field+"minimumTtl", strconv.FormatUint(uint64(prof.MinimumTTL), 10),
			"minimumTtl applies to multi-hop BFD, which the embedded BGP server does not run; its single-hop packets are sent with TTL 255 and the TTL of received ones is not checked")
	}
	return BFDConfig{
		Enabled:          true,
		ReceiveInterval:  time.Duration(prof.ReceiveInterval) * time.Millisecond,
		TransmitInterval: time.Duration(prof.TransmitInterval) * time.Millisecond,
		DetectMultiplier: uint8(prof.DetectMultiplier),
	}
}

// nodeRouterID picks the one router ID of the node's speaker (see
// DesiredPeers) and says where it comes from, for error messages. It is
// invalid when there is none.
func nodeRouterID(node Node, peers []*policy.Peer) (netip.Addr, string) {
	var explicit netip.Addr
	var from string
	agree := true
	for _, p := range peers {
		switch {
		case !p.RouterID.IsValid():
		case !explicit.IsValid():
			explicit, from = p.RouterID, fmt.Sprintf("the routerID of peer %q", p.Name)
		case p.RouterID != explicit:
			agree = false
		}
	}
	if explicit.IsValid() && agree {
		return explicit, from
	}
	v4, _ := firstOfFamily(node.Addresses)
	if !agree {
		return v4, "the node's address, as its peers set different routerIDs"
	}
	return v4, "the node's address"
}

// firstOfFamily returns the node's first usable IPv4 and IPv6 addresses.
func firstOfFamily(addrs []netip.Addr) (v4, v6 netip.Addr) {
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
			continue
		}
		if a.Is4() && !v4.IsValid() {
			v4 = a
		}
		if a.Is6() && !v6.IsValid() {
			v6 = a
		}
	}
	return v4, v6
}

// DesiredPaths returns the paths this node must advertise, one per prefix,
// sorted by prefix.
//
// An address of an eligible service is advertised through every
// BGPAdvertisement that matches this node (nodeSelectors), the service
// (serviceSelectors) and the address's pool (ipAddressPools or
// ipAddressPoolSelectors, as resolved by policy). The prefix is the address
// masked to the advertisement's aggregationLength (IPv4) or
// aggregationLengthV6 (IPv6); it is advertised while at least one address
// in it is.
//
// Peers are always named: the advertisement's peers (all of this node's
// peers when it names none) restricted to the sessions DesiredPeers
// configures on this node that carry the prefix's family (a session of that
// family, or a dual-stack one). An advertisement left with no such peer adds
// nothing; in particular a path never goes out with an empty Peers list,
// which the speaker would read as "every peer".
//
// Several advertisements for one prefix merge into one path: the union of
// their peers and of their communities, and the highest localPref. The
// speaker keeps one path per prefix, so a peer named by only one of them
// still gets the communities of the others.
func DesiredPaths(node Node, cfg policy.Config, services []ServiceAddrs) []Path {
	peers, _ := DesiredPeers(node, cfg)
	if len(peers) == 0 {
		return nil
	}

	// The advertisements of this node, with their targets per family.
	type nodeAdv struct {
		adv            *policy.BGPAdvertisement
		peers4, peers6 []string
	}
	var advs []nodeAdv
	for i := range cfg.BGPAdvertisements {
		a := &cfg.BGPAdvertisements[i]
		if !a.MatchesNode(node.Labels) {
			continue
		}
		na := nodeAdv{adv: a}
		for _, p := range peers {
			if !a.MatchesPeer(p.Name) {
				continue
			}
			if p.Address.Is4() || p.DualStack {
				na.peers4 = append(na.peers4, p.Name)
			}
			if p.Address.Is6() || p.DualStack {
				na.peers6 = append(na.peers6, p.Name)
			}
		}
		if len(na.peers4)+len(na.peers6) > 0 {
			advs = append(advs, na)
		}
	}
	if len(advs) == 0 {
		return nil
	}

	// Each prefix collects what its advertisements bring, then the lists
	// are sorted and de-duplicated once: cheaper than a set per prefix.
	byPrefix := map[netip.Prefix]*Path{}
	for i := range services {
		svc := &services[i]
		if !svc.Eligible {
			continue
		}
		for _, addr := range svc.Addresses {
			addr = addr.Unmap()
			if !addr.IsValid() {
				continue
			}
			pool := poolOf(cfg, svc.Pool, addr)
			if pool == nil {
				continue
			}
			for _, na := range advs {
				a := na.adv
				if !a.HasPool(pool.Name) || !a.MatchesService(svc.Labels) {
					continue
				}
				targets, bits := na.peers4, a.AggregationLength
				if addr.Is6() {
					targets, bits = na.peers6, a.AggregationLengthV6
				}
				if len(targets) == 0 {
					continue
				}
				pfx, err := addr.Prefix(bits)
				if err != nil {
					// Resolve bounds the lengths; a hand-made Config may not.
					continue
				}
				p := byPrefix[pfx]
				if p == nil {
					p = &Path{Prefix: pfx}
					byPrefix[pfx] = p
				}
				p.LocalPref = max(p.LocalPref, a.LocalPref)
				for _, c := range a.Communities {
					if c.Large {
						p.LargeCommunities = append(p.LargeCommunities, c.Parts)
					} else {
						p.Communities = append(p.Communities, c.Standard)
					}
				}
				p.Peers = append(p.Peers, targets...)
			}
		}
	}

	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for pfx := range byPrefix {
		prefixes = append(prefixes, pfx)
	}
	slices.SortFunc(prefixes, netip.Prefix.Compare)
	out := make([]Path, 0, len(byPrefix))
	for _, pfx := range prefixes {
		p := byPrefix[pfx]
		slices.Sort(p.Communities)
		p.Communities = slices.Compact(p.Communities)
		slices.SortFunc(p.LargeCommunities, compareLarge)
		p.LargeCommunities = slices.Compact(p.LargeCommunities)
		slices.Sort(p.Peers)
		p.Peers = slices.Compact(p.Peers)
		out = append(out, *p)
	}
	return out
}

// poolOf finds the pool of addr, trying the named pool first as it is
// almost always the right one. Pools never overlap, so the answer does not
// depend on the hint.
func poolOf(cfg policy.Config, hint string, addr netip.Addr) *policy.Pool {
	if p, ok := cfg.Pools[hint]; ok && p.Contains(addr) {
		return p
	}
	return cfg.PoolOf(addr)
}

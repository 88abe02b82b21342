// Package policy turns the metallb.io custom resources (plus the Secrets
// they reference) into one resolved, validated Config. Resolve is a pure
// function shared by the controller and the speaker: same input, same
// Config, same Problems, on every process.
package policy

import (
	"net/netip"
	"slices"
	"time"

	"go4.org/netipx"
	"k8s.io/apimachinery/pkg/labels"
)

// Config is the resolved configuration. Every name in it refers to an object
// that is itself in the Config, except BGPAdvertisement.Peers (see there).
type Config struct {
	// Pools by name. Pool names are cluster-wide keys (Services name pools by
	// name alone), so two pools of one name never both appear.
	Pools map[string]*Pool
	// L2Advertisements and BGPAdvertisements sorted by namespace, then name.
	L2Advertisements  []L2Advertisement
	BGPAdvertisements []BGPAdvertisement
	// Peers sorted by name.
	Peers []Peer
	// BFDProfiles by name, defaults applied.
	BFDProfiles map[string]BFDProfile
}

// PoolOf returns the pool whose ranges contain addr, or nil. Ranges never
// overlap, so there is at most one.
func (c Config) PoolOf(addr netip.Addr) *Pool {
	addr = addr.Unmap()
	for _, p := range c.Pools {
		if p.Contains(addr) {
			return p
		}
	}
	return nil
}

// Pool is a resolved IPAddressPool.
type Pool struct {
	Name      string
	Namespace string
	// Labels of the IPAddressPool object, matched by advertisements'
	// ipAddressPoolSelectors.
	Labels map[string]string
	// Addresses are the entries as the user wrote them; Ranges[i] is
	// Addresses[i] parsed. Ranges never overlap, within or across pools.
	Addresses []string
	Ranges    []netipx.IPRange
	// AutoAssign defaults to true as in the CRD.
	AutoAssign    bool
	AvoidBuggyIPs bool
	// HasServiceAllocation is true when spec.serviceAllocation is set; such
	// pools are tried before plain ones (see CandidatePools).
	HasServiceAllocation bool
	// Priority from serviceAllocation; lower wins. 0 means none, as in the
	// API, and then HasPriority is false.
	Priority    int
	HasPriority bool
	// Namespaces listed in serviceAllocation.namespaces, sorted.
	Namespaces []string
	// NamespaceSelectors and ServiceSelectors from serviceAllocation.
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
	// SelectedNamespaces: the namespaces of Resources.Namespaces matched by
	// NamespaceSelectors when Resolve ran, sorted. For status and display;
	// AdmitsService evaluates the selectors against live labels instead.
	SelectedNamespaces []string
}

// Contains reports whether addr is in one of the pool's ranges.
func (p *Pool) Contains(addr netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}

// HasFamily reports whether the pool has IPv4 addresses (v4 true) or IPv6
// addresses (v4 false).
func (p *Pool) HasFamily(v4 bool) bool {
	for _, r := range p.Ranges {
		if r.From().Is4() == v4 {
			return true
		}
	}
	return false
}

// AdmitsService reports whether the pool's serviceAllocation lets a Service
// in namespace ns, whose namespace carries nsLabels and which itself carries
// svcLabels, take addresses from it. A pool without serviceAllocation (or
// with an empty one) admits every Service. Otherwise the namespace must be
// listed or matched by a namespace selector (when any of those are set), and
// the Service must match a service selector (when any are set).
func (p *Pool) AdmitsService(ns string, nsLabels, svcLabels map[string]string) bool {
	if len(p.Namespaces) > 0 || len(p.NamespaceSelectors) > 0 {
		_, listed := slices.BinarySearch(p.Namespaces, ns)
		if !listed && !anyMatches(p.NamespaceSelectors, nsLabels) {
			return false
		}
	}
	if len(p.ServiceSelectors) > 0 && !anyMatches(p.ServiceSelectors, svcLabels) {
		return false
	}
	return true
}

// anyMatches reports whether one of sels matches set; false for no sels.
func anyMatches(sels []labels.Selector, set map[string]string) bool {
	for _, s := range sels {
		if s.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// matchesOrAll is anyMatches where an empty list means "everything", the
// meaning nodeSelectors and serviceSelectors have on advertisements and
// peers.
func matchesOrAll(sels []labels.Selector, set map[string]string) bool {
	return len(sels) == 0 || anyMatches(sels, set)
}

// L2Advertisement is a resolved L2Advertisement.
type L2Advertisement struct {
	Name      string
	Namespace string
	// Pools this advertisement covers, sorted. Always explicit: an empty list
	// means none (a CR naming neither pools nor pool selectors is resolved to
	// every pool here).
	Pools []string
	// NodeSelectors and ServiceSelectors: empty means every node / service.
	NodeSelectors    []labels.Selector
	ServiceSelectors []labels.Selector
	// Interfaces to announce on; empty means all.
	Interfaces []string
}

// HasPool reports whether the advertisement covers the named pool.
func (a *L2Advertisement) HasPool(name string) bool {
	_, ok := slices.BinarySearch(a.Pools, name)
	return ok
}

// MatchesNode reports whether a node with these labels may announce.
func (a *L2Advertisement) MatchesNode(nodeLabels map[string]string) bool {
	return matchesOrAll(a.NodeSelectors, nodeLabels)
}

// MatchesService reports whether a Service with these labels is announced.
func (a *L2Advertisement) MatchesService(svcLabels map[string]string) bool {
	return matchesOrAll(a.ServiceSelectors, svcLabels)
}

// BGPAdvertisement is a resolved BGPAdvertisement.
type BGPAdvertisement struct {
	Name      string
	Namespace string
	// Pools as in L2Advertisement.Pools.
	Pools []string
	// AggregationLength (default 32) and AggregationLengthV6 (default 128)
	// are the prefix lengths announced for an IPv4 / IPv6 service address.
	AggregationLength   int
	AggregationLengthV6 int
	LocalPref           uint32
	// Communities resolved to values (aliases replaced), sorted, no repeats.
	Communities []Community
	// NodeSelectors and ServiceSelectors: empty means every node / service.
	NodeSelectors    []labels.Selector
	ServiceSelectors []labels.Selector
	// Peers limits announcements to the BGPPeers of these names; empty means
	// all peers. Names of peers that do not exist are kept (and reported):
	// dropping them could turn the list empty and so widen it to every peer.
	Peers []string
}

// HasPool reports whether the advertisement covers the named pool.
func (a *BGPAdvertisement) HasPool(name string) bool {
	_, ok := slices.BinarySearch(a.Pools, name)
	return ok
}

// MatchesNode reports whether a node with these labels may announce.
func (a *BGPAdvertisement) MatchesNode(nodeLabels map[string]string) bool {
	return matchesOrAll(a.NodeSelectors, nodeLabels)
}

// MatchesService reports whether a Service with these labels is announced.
func (a *BGPAdvertisement) MatchesService(svcLabels map[string]string) bool {
	return matchesOrAll(a.ServiceSelectors, svcLabels)
}

// MatchesPeer reports whether announcements go to the named peer.
func (a *BGPAdvertisement) MatchesPeer(name string) bool {
	return len(a.Peers) == 0 || slices.Contains(a.Peers, name)
}

// Peer is a resolved BGPPeer.
type Peer struct {
	Name      string
	Namespace string
	MyASN     uint32
	// ASN of the peer; 0 when DynamicASN ("internal" or "external") is used.
	ASN        uint32
	DynamicASN string
	// Exactly one of Address (numbered session) and Interface (unnumbered)
	// is set.
	Address   netip.Addr
	Interface string
	// SourceAddress and RouterID are invalid (zero) when not set.
	SourceAddress netip.Addr
	RouterID      netip.Addr
	// Port defaults to 179.
	Port uint16
	// HoldTime and KeepaliveTime with defaults applied (90 s and a third of
	// the hold time); HoldTime 0 disables keepalives.
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	// ConnectTime is 0 when not set (the BGP implementation's default).
	ConnectTime time.Duration
	// NodeSelectors: empty means every node.
	NodeSelectors []labels.Selector
	// Password from spec.password or from the basic-auth Secret named by
	// spec.passwordSecret; "" for none.
	Password string
	// BFDProfile names an entry of Config.BFDProfiles, or is "".
	BFDProfile             string
	EBGPMultiHop           bool
	VRF                    string
	EnableGracefulRestart  bool
	DualStackAddressFamily bool
}

// MatchesNode reports whether a node with these labels peers with this peer.
func (p *Peer) MatchesNode(nodeLabels map[string]string) bool {
	return matchesOrAll(p.NodeSelectors, nodeLabels)
}

// BFDProfile is a resolved BFDProfile with defaults applied. Intervals are
// in milliseconds.
type BFDProfile struct {
	Name             string
	ReceiveInterval  uint32
	TransmitInterval uint32
	DetectMultiplier uint32
	EchoInterval     uint32
	EchoMode         bool
	PassiveMode      bool
	MinimumTTL       uint32
}

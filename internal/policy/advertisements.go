package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/api/v1beta1"
)

// advCommon is what L2 and BGP advertisements share.
type advCommon struct {
	pools            []string
	nodeSelectors    []labels.Selector
	serviceSelectors []labels.Selector
}

// resolveAdvCommon checks the selectors and resolves the pools of one
// advertisement. ok is false when the advertisement must be left out.
func resolveAdvCommon(obj ref, poolNames []string, poolSels, nodeSels, svcSels []metav1.LabelSelector, pools poolTable, ps *problems) (advCommon, bool) {
	var c advCommon
	ipSels, bad, err := parseSelectors("spec.ipAddressPoolSelectors", poolSels)
	if err != nil {
		ps.invalid(obj, bad, "", err)
		return c, false
	}
	if c.nodeSelectors, bad, err = parseSelectors("spec.nodeSelectors", nodeSels); err != nil {
		ps.invalid(obj, bad, "", err)
		return c, false
	}
	if c.serviceSelectors, bad, err = parseSelectors("spec.serviceSelectors", svcSels); err != nil {
		ps.invalid(obj, bad, "", err)
		return c, false
	}
	if len(poolNames) == 0 && len(poolSels) == 0 {
		c.pools = slices.Clone(pools.names)
		return c, true
	}
	if field, value, err := duplicateName("spec.ipAddressPools", poolNames); err != nil {
		ps.invalid(obj, field, value, err)
		return c, false
	}
	seen := map[string]bool{}
	for i, name := range poolNames {
		seen[name] = true
		if _, ok := pools.accepted[name]; ok {
			c.pools = append(c.pools, name)
			continue
		}
		field := fmt.Sprintf("spec.ipAddressPools[%d]", i)
		if lo, wasLeftOut := pools.leftOut[name]; wasLeftOut {
			ps.dangling(obj, field, name, lo,
				"names "+lo.String()+", which is left out of the configuration (see its own problem); its addresses are announced through this advertisement once it is mended")
		} else {
			other := ref{kind: KindIPAddressPool, name: name}
			ps.dangling(obj, field, name, other,
				"names "+other.String()+", which does not exist yet; its addresses are announced through this advertisement once it is created")
		}
	}
	if len(ipSels) > 0 {
		for _, name := range pools.names {
			if !seen[name] && anyMatches(ipSels, pools.accepted[name].Labels) {
				seen[name] = true
				c.pools = append(c.pools, name)
			}
		}
	}
	slices.Sort(c.pools)
	return c, true
}

func resolveL2Advertisements(in []v1beta1.L2Advertisement, pools poolTable, ps *problems) []L2Advertisement {
	var out []L2Advertisement
	for _, a := range byAge(in) {
		obj := refOf(KindL2Advertisement, a)
		c, ok := resolveAdvCommon(obj, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, a.Spec.ServiceSelectors, pools, ps)
		if !ok {
			continue
		}
		for i, iface := range a.Spec.Interfaces {
			if err := checkInterfaceName(iface); err != nil {
				ps.invalid(obj, fmt.Sprintf("spec.interfaces[%d]", i), iface, err)
				ok = false
				break
			}
		}
		if field, value, err := duplicateName("spec.interfaces", a.Spec.Interfaces); ok && err != nil {
			ps.invalid(obj, field, value, err)
			ok = false
		}
		if !ok {
			continue
		}
		ifaces := slices.Clone(a.Spec.Interfaces)
		slices.Sort(ifaces)
		out = append(out, L2Advertisement{
			Name:             a.Name,
			Namespace:        a.Namespace,
			Pools:            c.pools,
			NodeSelectors:    c.nodeSelectors,
			ServiceSelectors: c.serviceSelectors,
			Interfaces:       ifaces,
		})
	}
	sortByNamespaceName(out, func(a L2Advertisement) (string, string) { return a.Namespace, a.Name })
	return out
}

// checkInterfaceName rejects what cannot be a Linux interface name.
func checkInterfaceName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > 15:
		return fmt.Errorf("is longer than 15 bytes")
	case strings.ContainsAny(s, "/: \t\r\n"):
		return fmt.Errorf("contains '/', ':' or white space")
	}
	return nil
}

func sortByNamespaceName[T any](s []T, key func(T) (string, string)) {
	slices.SortFunc(s, func(a, b T) int {
		an, aa := key(a)
		bn, bb := key(b)
		if c := cmp.Compare(an, bn); c != 0 {
			return c
		}
		return cmp.Compare(aa, bb)
	})
}

func resolveBGPAdvertisements(in []v1beta1.BGPAdvertisement, pools poolTable, aliases aliasTable, peers peerTable, ps *problems) []BGPAdvertisement {
	var out []BGPAdvertisement
	for _, a := range byAge(in) {
		obj := refOf(KindBGPAdvertisement, a)
		adv, ok := bgpAdvertisementFromCR(a, obj, pools, aliases, peers, ps)
		if !ok {
			continue
		}
		if prev, pool, clash := localPrefClash(&adv, out, pools); clash {
			other := ref{kind: KindBGPAdvertisement, namespace: prev.Namespace, name: prev.Name}
			ps.add(obj, true, "spec.localPref", fmt.Sprint(adv.LocalPref), other, ErrIncompatible,
				fmt.Sprintf("differs from localPref %d of %s, which announces IPAddressPool %s with the same aggregation to the same peers from the same nodes",
					prev.LocalPref, other, pool))
			continue
		}
		out = append(out, adv)
	}
	sortByNamespaceName(out, func(a BGPAdvertisement) (string, string) { return a.Namespace, a.Name })
	return out
}

func bgpAdvertisementFromCR(a *v1beta1.BGPAdvertisement, obj ref, pools poolTable, aliases aliasTable, peers peerTable, ps *problems) (BGPAdvertisement, bool) {
	adv := BGPAdvertisement{
		Name:                a.Name,
		Namespace:           a.Namespace,
		AggregationLength:   int(v1beta1.DefaultAggregationLength),
		AggregationLengthV6: int(v1beta1.DefaultAggregationLengthV6),
		LocalPref:           a.Spec.LocalPref,
	}
	if l := a.Spec.AggregationLength; l != nil {
		if *l < 0 || *l > 32 {
			ps.invalid(obj, "spec.aggregationLength", fmt.Sprint(*l), fmt.Errorf("is outside 0-32"))
			return adv, false
		}
		adv.AggregationLength = int(*l)
	}
	if l := a.Spec.AggregationLengthV6; l != nil {
		if *l < 0 || *l > 128 {
			ps.invalid(obj, "spec.aggregationLengthV6", fmt.Sprint(*l), fmt.Errorf("is outside 0-128"))
			return adv, false
		}
		adv.AggregationLengthV6 = int(*l)
	}
	// Aggregating announces a prefix shared by many services, so it cannot
	// be limited to the services a selector picks.
	if len(a.Spec.ServiceSelectors) > 0 {
		if adv.AggregationLength != 32 {
			ps.invalid(obj, "spec.aggregationLength", fmt.Sprint(adv.AggregationLength), fmt.Errorf("cannot be combined with spec.serviceSelectors"))
			return adv, false
		}
		if adv.AggregationLengthV6 != 128 {
			ps.invalid(obj, "spec.aggregationLengthV6", fmt.Sprint(adv.AggregationLengthV6), fmt.Errorf("cannot be combined with spec.serviceSelectors"))
			return adv, false
		}
	}
	if field, value, err := duplicateName("spec.communities", a.Spec.Communities); err != nil {
		ps.invalid(obj, field, value, err)
		return adv, false
	}
	seen := map[Community]bool{}
	for i, text := range a.Spec.Communities {
		field := fmt.Sprintf("spec.communities[%d]", i)
		v, known := aliases.values[text]
		if !known {
			var err error
			v, err = ParseCommunity(text)
			switch {
			case err == nil:
			case !isCommunityFormat(err):
				ps.invalid(obj, field, text, err)
				return adv, false
			default:
				if lo, wasLeftOut := aliases.leftOut[text]; wasLeftOut {
					ps.add(obj, true, field, text, lo, ErrUnknownCommunity,
						"is an alias of "+lo.String()+", which is left out of the configuration (see its own problem)")
				} else {
					ps.add(obj, true, field, text, ref{}, ErrUnknownCommunity,
						"is neither a community value nor an alias defined by a Community object")
				}
				return adv, false
			}
		}
		if !seen[v] {
			seen[v] = true
			adv.Communities = append(adv.Communities, v)
		}
	}
	slices.SortFunc(adv.Communities, Community.compare)

	c, ok := resolveAdvCommon(obj, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors, a.Spec.NodeSelectors, a.Spec.ServiceSelectors, pools, ps)
	if !ok {
		return adv, false
	}
	adv.NodeSelectors, adv.ServiceSelectors = c.nodeSelectors, c.serviceSelectors
	for _, name := range c.pools {
		if msg, entry, ok := aggregationFits(pools.accepted[name], adv.AggregationLength, adv.AggregationLengthV6); !ok {
			pool := pools.accepted[name]
			other := ref{kind: KindIPAddressPool, namespace: pool.Namespace, name: name}
			field := "spec.aggregationLength"
			if msg.v6 {
				field = "spec.aggregationLengthV6"
			}
			ps.add(obj, false, field, fmt.Sprint(msg.length), other, ErrIncompatible,
				fmt.Sprintf("is shorter than the prefix length %d of %s (its spec.addresses[%d] %q): the aggregate would cover addresses outside the pool; the pool is not announced through this advertisement",
					msg.bits, other, entry, pool.Addresses[entry]))
			continue
		}
		adv.Pools = append(adv.Pools, name)
	}
	if field, value, err := duplicateName("spec.peers", a.Spec.Peers); err != nil {
		ps.invalid(obj, field, value, err)
		return adv, false
	}
	for i, name := range a.Spec.Peers {
		adv.Peers = append(adv.Peers, name)
		if _, ok := peers.byName[name]; ok {
			continue
		}
		field := fmt.Sprintf("spec.peers[%d]", i)
		if lo, wasLeftOut := peers.leftOut[name]; wasLeftOut {
			ps.dangling(obj, field, name, lo, "names "+lo.String()+", which is left out of the configuration (see its own problem); the addresses are announced to it once it is mended")
		} else {
			other := ref{kind: KindBGPPeer, name: name}
			ps.dangling(obj, field, name, other, "names "+other.String()+", which does not exist yet; the addresses are announced to it once it is created")
		}
	}
	dropIPv6WithBFDEcho(&adv, obj, pools, peers, ps)
	slices.Sort(adv.Peers)
	return adv, true
}

// dropIPv6WithBFDEcho drops from adv the pools with IPv6 addresses when a
// peer it announces to uses a BFD profile in echo mode, which works over
// IPv4 only. MetalLB refuses the configuration; here the IPv6 pools are not
// announced through this advertisement and the rest stays.
func dropIPv6WithBFDEcho(adv *BGPAdvertisement, obj ref, pools poolTable, peers peerTable, ps *problems) {
	var echo *Peer
	field, detail := "spec.peers", ""
	if len(adv.Peers) == 0 {
		for _, p := range peers.order {
			if peers.echo(p) {
				echo, detail = p, "is empty, so the advertisement announces to every peer, including "
				break
			}
		}
	} else {
		for i, name := range adv.Peers {
			if p, ok := peers.byName[name]; ok && peers.echo(p) {
				echo, field, detail = p, fmt.Sprintf("spec.peers[%d]", i), "names "
				break
			}
		}
	}
	if echo == nil {
		return
	}
	other := peers.refs[echo]
	kept := adv.Pools[:0]
	for _, name := range adv.Pools {
		pool := pools.accepted[name]
		if !pool.HasFamily(false) {
			kept = append(kept, name)
			continue
		}
		poolRef := ref{kind: KindIPAddressPool, namespace: pool.Namespace, name: name}
		value := ""
		if field != "spec.peers" {
			value = echo.Name
		}
		ps.add(obj, false, field, value, other, ErrIncompatible,
			fmt.Sprintf("%s%s, whose BFD profile %q uses echo mode, which works over IPv4 only; %s has IPv6 addresses and is not announced through this advertisement",
				detail, other, echo.BFDProfile, poolRef))
	}
	adv.Pools = kept
}

func isCommunityFormat(err error) bool {
	return err != nil && errors.Is(err, ErrCommunityFormat)
}

type aggregationMismatch struct {
	v6           bool
	length, bits int
}

// aggregationFits checks that no entry of pool is narrower than the
// aggregation length of its family: the aggregate of any address would then
// announce addresses the pool does not own. A range entry counts by its
// broadest prefix, the rule MetalLB applies, so what MetalLB accepts is
// accepted here.
func aggregationFits(pool *Pool, v4Len, v6Len int) (aggregationMismatch, int, bool) {
	for i, r := range pool.Ranges {
		length := v4Len
		if r.From().Is6() {
			length = v6Len
		}
		broadest := r.From().BitLen()
		for _, p := range r.Prefixes() {
			broadest = min(broadest, p.Bits())
		}
		if length < broadest {
			return aggregationMismatch{v6: r.From().Is6(), length: length, bits: broadest}, i, false
		}
	}
	return aggregationMismatch{}, 0, true
}

// localPrefClash finds an accepted advertisement that would announce the
// same route as adv (a shared pool, the same aggregation length, a peer and
// a node in common) with another LOCAL_PREF: a peer cannot get one route
// with two preferences. Advertisements with serviceSelectors are exempt, as
// which services they cover is only known later.
func localPrefClash(adv *BGPAdvertisement, accepted []BGPAdvertisement, pools poolTable) (*BGPAdvertisement, string, bool) {
	if len(adv.ServiceSelectors) > 0 {
		return nil, "", false
	}
	for i := range accepted {
		prev := &accepted[i]
		if len(prev.ServiceSelectors) > 0 || prev.LocalPref == adv.LocalPref {
			continue
		}
		if !peersShared(prev.Peers, adv.Peers) || !selectorListsOverlap(prev.NodeSelectors, adv.NodeSelectors) {
			continue
		}
		for _, name := range adv.Pools {
			if !prev.HasPool(name) {
				continue
			}
			p := pools.accepted[name]
			sameV4 := prev.AggregationLength == adv.AggregationLength && p.HasFamily(true)
			sameV6 := prev.AggregationLengthV6 == adv.AggregationLengthV6 && p.HasFamily(false)
			if sameV4 || sameV6 {
				return prev, name, true
			}
		}
	}
	return nil, "", false
}

// peersShared reports whether two peer lists (empty meaning all peers) have
// a peer in common.
func peersShared(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, name := range a {
		if slices.Contains(b, name) {
			return true
		}
	}
	return false
}

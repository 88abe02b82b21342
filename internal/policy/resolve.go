package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
)

// Kinds as they appear in Problem.Kind and in messages.
const (
	KindIPAddressPool    = "IPAddressPool"
	KindL2Advertisement  = "L2Advertisement"
	KindBGPAdvertisement = "BGPAdvertisement"
	KindCommunity        = "Community"
	KindBFDProfile       = "BFDProfile"
	KindBGPPeer          = "BGPPeer"
	KindSecret           = "Secret"
)

// Resources is everything Resolve reads: the metallb.io objects as listed
// from the API (the caller decides which namespaces to watch), the Secrets
// peers may reference, and the Namespaces for namespaceSelectors.
type Resources struct {
	Pools       []v1beta1.IPAddressPool
	L2Advs      []v1beta1.L2Advertisement
	BGPAdvs     []v1beta1.BGPAdvertisement
	Communities []v1beta1.Community
	BFDProfiles []v1beta1.BFDProfile
	Peers       []v1beta2.BGPPeer
	// Secrets keyed "namespace/name".
	Secrets    map[string]corev1.Secret
	Namespaces []corev1.Namespace
}

// Resolve turns resources into one Config. It never fails as a whole: an
// object with a problem is left out (or, for the softer rules below, kept
// without the offending part), every other object stays, and each problem
// is returned naming the object, the field, the value and, for conflicts,
// the other object. The input is not trusted: the checks the CRDs make at
// apply time are repeated here.
//
// Rules where two objects conflict. Objects are taken oldest first (by
// creationTimestamp, then name, then namespace), so the object that came
// later, which introduced the conflict, is the one left out, and the result
// does not depend on list order:
//   - pools whose addresses overlap, or two pools of the same name: the
//     newer pool is left out;
//   - two Community objects defining one alias: the newer object is left out;
//   - two BFD profiles or two peers of the same name: the newer is left out;
//   - two peers for the same session (address or interface, port, VRF) on
//     nodes both select: the newer peer is left out;
//   - a peer naming a missing BFD profile or an unusable password Secret:
//     the peer is left out;
//   - an advertisement using a community that is neither a value nor a known
//     alias: the advertisement is left out (announcing without the community
//     could leak routes the community was meant to restrain);
//   - two BGPAdvertisements announcing the same route (shared pool, same
//     aggregation length, a peer and a node in common, no serviceSelectors)
//     with different localPref: the newer is left out.
//
// Softer rules, where the advertisement is kept (Problem.LeftOut false):
//   - an advertisement naming a pool that does not exist or was left out
//     keeps the other pools; the pool is not announced through it. This is
//     how MetalLB treats such names (pools are commonly created after their
//     advertisement), and the Problem makes it visible;
//   - a BGPAdvertisement naming a peer that does not exist keeps the name
//     (see BGPAdvertisement.Peers);
//   - a BGPAdvertisement whose aggregation length is shorter than a
//     selected pool's prefix would announce addresses outside the pool: that
//     pool is dropped from the advertisement, the others stay.
func Resolve(r Resources) (Config, []Problem) {
	var ps problems
	cfg := Config{}
	var bfdLeftOut map[string]ref
	cfg.BFDProfiles, bfdLeftOut = resolveBFDProfiles(r.BFDProfiles, &ps)
	aliases := resolveCommunities(r.Communities, &ps)
	pools := resolvePools(r.Pools, r.Namespaces, &ps)
	cfg.Pools = pools.accepted
	peers := resolvePeers(r.Peers, r.Secrets, cfg.BFDProfiles, bfdLeftOut, &ps)
	cfg.Peers = peers.list()
	cfg.L2Advertisements = resolveL2Advertisements(r.L2Advs, pools, &ps)
	cfg.BGPAdvertisements = resolveBGPAdvertisements(r.BGPAdvs, pools, aliases, peers, &ps)
	return cfg, ps
}

// byAge returns pointers to items, the longest-settled first: by the time of
// the last change to the object itself (its metadata.managedFields, status
// writes excluded; creationTimestamp where there are none), then
// creationTimestamp, name and namespace. Conflicts are settled in this
// order, so the object whose latest change introduced a conflict is the one
// left out, whether it is new or an old object edited.
func byAge[T any, PT interface {
	*T
	metav1.Object
}](items []T) []PT {
	out := make([]PT, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	slices.SortStableFunc(out, func(a, b PT) int {
		if c := lastChange(a).Compare(lastChange(b)); c != 0 {
			return c
		}
		ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
		if c := ta.Time.Compare(tb.Time); c != 0 {
			return c
		}
		if c := cmp.Compare(a.GetName(), b.GetName()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetNamespace(), b.GetNamespace())
	})
	return out
}

// lastChange is when the object, not its status, was last written.
func lastChange(o metav1.Object) time.Time {
	last := o.GetCreationTimestamp().Time
	for _, f := range o.GetManagedFields() {
		if f.Subresource == "" && f.Time != nil && f.Time.After(last) {
			last = f.Time.Time
		}
	}
	return last
}

func refOf(kind string, o metav1.Object) ref {
	return ref{kind: kind, namespace: o.GetNamespace(), name: o.GetName()}
}

// --- BFD profiles ---------------------------------------------------------

// resolveBFDProfiles returns the accepted profiles by name and, for
// messages, the names of profiles left out.
func resolveBFDProfiles(in []v1beta1.BFDProfile, ps *problems) (map[string]BFDProfile, map[string]ref) {
	out := map[string]BFDProfile{}
	leftOut := map[string]ref{}
	owner := map[string]ref{}
	for _, p := range byAge(in) {
		obj := refOf(KindBFDProfile, p)
		if p.Name == "" {
			ps.invalid(obj, "metadata.name", "", fmt.Errorf("empty name"))
			continue
		}
		if _, taken := owner[p.Name]; !taken {
			// Until accepted below; a later profile of the name may still be.
			leftOut[p.Name] = obj
		}
		res := BFDProfile{
			Name:             p.Name,
			ReceiveInterval:  v1beta1.DefaultBFDReceiveInterval,
			TransmitInterval: v1beta1.DefaultBFDTransmitInterval,
			DetectMultiplier: v1beta1.DefaultBFDDetectMultiplier,
			EchoInterval:     v1beta1.DefaultBFDEchoInterval,
			MinimumTTL:       v1beta1.DefaultBFDMinimumTTL,
			EchoMode:         p.Spec.EchoMode != nil && *p.Spec.EchoMode,
			PassiveMode:      p.Spec.PassiveMode != nil && *p.Spec.PassiveMode,
		}
		fields := []struct {
			name     string
			in       *uint32
			out      *uint32
			min, max uint32
		}{
			{"spec.receiveInterval", p.Spec.ReceiveInterval, &res.ReceiveInterval, 10, 60000},
			{"spec.transmitInterval", p.Spec.TransmitInterval, &res.TransmitInterval, 10, 60000},
			{"spec.detectMultiplier", p.Spec.DetectMultiplier, &res.DetectMultiplier, 2, 255},
			{"spec.echoInterval", p.Spec.EchoInterval, &res.EchoInterval, 10, 60000},
			{"spec.minimumTtl", p.Spec.MinimumTTL, &res.MinimumTTL, 1, 254},
		}
		bad := false
		for _, f := range fields {
			if f.in == nil {
				continue
			}
			if *f.in < f.min || *f.in > f.max {
				ps.invalid(obj, f.name, fmt.Sprint(*f.in), fmt.Errorf("is outside %d-%d", f.min, f.max))
				bad = true
				break
			}
			*f.out = *f.in
		}
		if bad {
			continue
		}
		if prev, dup := owner[p.Name]; dup {
			ps.add(obj, true, "metadata.name", p.Name, prev, ErrDuplicate, "is already the name of "+prev.String())
			continue
		}
		owner[p.Name] = obj
		delete(leftOut, p.Name)
		out[p.Name] = res
	}
	return out, leftOut
}

// --- Communities ----------------------------------------------------------

// aliasTable maps alias names to values, and remembers aliases whose
// Community object was left out so that users are pointed at the cause.
type aliasTable struct {
	values  map[string]Community
	leftOut map[string]ref
}

func resolveCommunities(in []v1beta1.Community, ps *problems) aliasTable {
	t := aliasTable{values: map[string]Community{}, leftOut: map[string]ref{}}
	owner := map[string]ref{}
	for _, c := range byAge(in) {
		obj := refOf(KindCommunity, c)
		local := map[string]Community{}
		ok := true
		for i, a := range c.Spec.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			if a.Name == "" || strings.ContainsAny(a.Name, ": \t\r\n") {
				ps.invalid(obj, field+".name", a.Name, fmt.Errorf("must be a non-empty name without colons or spaces"))
				ok = false
				break
			}
			v, err := ParseCommunity(a.Value)
			if err != nil {
				ps.invalid(obj, field+".value", a.Value, err)
				ok = false
				break
			}
			if _, dup := local[a.Name]; dup {
				ps.invalid(obj, field+".name", a.Name, fmt.Errorf("is defined twice in this object"))
				ok = false
				break
			}
			if prev, dup := owner[a.Name]; dup {
				ps.add(obj, true, field+".name", a.Name, prev, ErrDuplicate, "is already an alias defined by "+prev.String())
				ok = false
				break
			}
			local[a.Name] = v
		}
		if !ok {
			for _, a := range c.Spec.Communities {
				if _, taken := owner[a.Name]; !taken {
					t.leftOut[a.Name] = obj
				}
			}
			continue
		}
		for name, v := range local {
			owner[name] = obj
			t.values[name] = v
			delete(t.leftOut, name)
		}
	}
	return t
}

// --- Pools ----------------------------------------------------------------

// poolTable is the pools accepted so far plus, for messages, the names of
// pools that were left out.
type poolTable struct {
	accepted map[string]*Pool
	leftOut  map[string]ref
	// sorted names of accepted pools, for "all pools".
	names []string
}

func resolvePools(in []v1beta1.IPAddressPool, namespaces []corev1.Namespace, ps *problems) poolTable {
	t := poolTable{accepted: map[string]*Pool{}, leftOut: map[string]ref{}}
	objs := byAge(in)
	// First the in-object checks of every pool, each pool's problems kept
	// apart so that they are reported in age order with the conflicts.
	parsed := make([]*Pool, len(objs))
	own := make([]problems, len(objs))
	for i, p := range objs {
		parsed[i], _ = poolFromCR(p, refOf(KindIPAddressPool, p), namespaces, &own[i])
	}
	overlaps := poolOverlaps(parsed)
	accepted := make([]bool, len(objs))
	owner := map[string]ref{}
	for i, p := range objs {
		obj := refOf(KindIPAddressPool, p)
		*ps = append(*ps, own[i]...)
		ok := parsed[i] != nil
		if ok {
			if prev, dup := owner[p.Name]; dup {
				ps.add(obj, true, "metadata.name", p.Name, prev, ErrDuplicate, "is already the name of "+prev.String()+" (pool names are cluster-wide)")
				ok = false
			}
		}
		if ok {
			// Pools are taken oldest first, so an accepted pool overlapping
			// this one is older: this one is left out.
			var hit *overlapPair
			for k := range overlaps[i] {
				o := &overlaps[i][k]
				if accepted[o.otherPool] && (hit == nil || o.less(hit)) {
					hit = o
				}
			}
			if hit != nil {
				other := refOf(KindIPAddressPool, objs[hit.otherPool])
				ps.add(obj, true, fmt.Sprintf("spec.addresses[%d]", hit.entry), parsed[i].Addresses[hit.entry], other, ErrOverlap,
					fmt.Sprintf("overlaps %s (its spec.addresses[%d] %q)", other, hit.otherEntry, parsed[hit.otherPool].Addresses[hit.otherEntry]))
				ok = false
			}
		}
		if !ok {
			if _, taken := owner[p.Name]; !taken {
				t.leftOut[p.Name] = obj
			}
			continue
		}
		accepted[i] = true
		owner[p.Name] = obj
		delete(t.leftOut, p.Name)
		t.accepted[p.Name] = parsed[i]
		t.names = append(t.names, p.Name)
	}
	slices.Sort(t.names)
	return t
}

// poolFromCR makes the in-object checks of one pool.
func poolFromCR(p *v1beta1.IPAddressPool, obj ref, namespaces []corev1.Namespace, ps *problems) (*Pool, bool) {
	if p.Name == "" {
		ps.invalid(obj, "metadata.name", "", fmt.Errorf("empty name"))
		return nil, false
	}
	if len(p.Spec.Addresses) == 0 {
		ps.invalid(obj, "spec.addresses", "", fmt.Errorf("lists no addresses"))
		return nil, false
	}
	pool := &Pool{
		Name:          p.Name,
		Namespace:     p.Namespace,
		Labels:        p.Labels,
		Addresses:     slices.Clone(p.Spec.Addresses),
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
	}
	for i, e := range p.Spec.Addresses {
		r, err := ParseAddress(e)
		if err != nil {
			ps.invalid(obj, fmt.Sprintf("spec.addresses[%d]", i), e, err)
			return nil, false
		}
		pool.Ranges = append(pool.Ranges, r)
	}
	if i, j, overlap := firstOverlap(pool.Ranges); overlap {
		ps.add(obj, true, fmt.Sprintf("spec.addresses[%d]", j), p.Spec.Addresses[j], ref{}, fmt.Errorf("%w: %w", ErrInvalidField, ErrOverlap),
			fmt.Sprintf("overlaps spec.addresses[%d] %q of the same pool", i, p.Spec.Addresses[i]))
		return nil, false
	}
	sa := p.Spec.AllocateTo
	if sa == nil {
		return pool, true
	}
	pool.HasServiceAllocation = true
	if sa.Priority < 0 {
		ps.invalid(obj, "spec.serviceAllocation.priority", fmt.Sprint(sa.Priority), fmt.Errorf("is negative"))
		return nil, false
	}
	pool.Priority, pool.HasPriority = sa.Priority, sa.Priority > 0
	pool.Namespaces = slices.Clone(sa.Namespaces)
	slices.Sort(pool.Namespaces)
	for i, ns := range pool.Namespaces {
		if ns == "" {
			ps.invalid(obj, "spec.serviceAllocation.namespaces", "", fmt.Errorf("has an empty entry"))
			return nil, false
		}
		if i > 0 && pool.Namespaces[i-1] == ns {
			ps.invalid(obj, "spec.serviceAllocation.namespaces", ns, fmt.Errorf("is listed twice"))
			return nil, false
		}
	}
	var bad string
	var err error
	if pool.NamespaceSelectors, bad, err = parseSelectors("spec.serviceAllocation.namespaceSelectors", sa.NamespaceSelectors); err != nil {
		ps.invalid(obj, bad, "", err)
		return nil, false
	}
	if pool.ServiceSelectors, bad, err = parseSelectors("spec.serviceAllocation.serviceSelectors", sa.ServiceSelectors); err != nil {
		ps.invalid(obj, bad, "", err)
		return nil, false
	}
	for _, ns := range namespaces {
		if anyMatches(pool.NamespaceSelectors, ns.Labels) {
			pool.SelectedNamespaces = append(pool.SelectedNamespaces, ns.Name)
		}
	}
	slices.Sort(pool.SelectedNamespaces)
	return pool, true
}

// --- Advertisements -------------------------------------------------------

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
	seen := map[string]bool{}
	for i, name := range poolNames {
		if seen[name] {
			continue
		}
		seen[name] = true
		if _, ok := pools.accepted[name]; ok {
			c.pools = append(c.pools, name)
			continue
		}
		field := fmt.Sprintf("spec.ipAddressPools[%d]", i)
		if lo, wasLeftOut := pools.leftOut[name]; wasLeftOut {
			ps.add(obj, false, field, name, lo, ErrMissingReference,
				"names "+lo.String()+", which is left out of the configuration (see its own problem); not announced through this advertisement")
		} else {
			other := ref{kind: KindIPAddressPool, name: name}
			ps.add(obj, false, field, name, other, ErrMissingReference,
				"names "+other.String()+", which does not exist; not announced through this advertisement")
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
			Interfaces:       slices.Compact(ifaces),
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
	seenPeer := map[string]bool{}
	for i, name := range a.Spec.Peers {
		if seenPeer[name] {
			continue
		}
		seenPeer[name] = true
		adv.Peers = append(adv.Peers, name)
		if _, ok := peers.byName[name]; ok {
			continue
		}
		field := fmt.Sprintf("spec.peers[%d]", i)
		if lo, wasLeftOut := peers.leftOut[name]; wasLeftOut {
			ps.add(obj, false, field, name, lo, ErrMissingReference, "names "+lo.String()+", which is left out of the configuration (see its own problem)")
		} else {
			other := ref{kind: KindBGPPeer, name: name}
			ps.add(obj, false, field, name, other, ErrMissingReference, "names "+other.String()+", which does not exist")
		}
	}
	slices.Sort(adv.Peers)
	return adv, true
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

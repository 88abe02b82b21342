package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
//     keeps the other pools; the name selects nothing until the pool
//     appears. This is how MetalLB treats such names (pools are commonly
//     created after their advertisement): the Problem is Dangling, a
//     warning, not an invalid configuration;
//   - a BGPAdvertisement naming a peer that does not exist keeps the name
//     (see BGPAdvertisement.Peers); the Problem is Dangling too;
//   - a BGPAdvertisement whose aggregation length is shorter than a
//     selected pool's prefix would announce addresses outside the pool: that
//     pool is dropped from the advertisement, the others stay;
//   - a BGPAdvertisement announcing a pool with IPv6 addresses to a peer
//     whose BFD profile uses echo mode (IPv4 only; MetalLB refuses it):
//     that pool is dropped from the advertisement, the others stay.
//
// Within one object, a list naming the same pool, peer, community,
// interface, namespace or selector twice leaves the object out, as MetalLB
// refuses it: a repeated entry has no meaning, and most likely one of the
// two was meant to be something else.
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
	if slices.Contains(sa.Namespaces, "") {
		ps.invalid(obj, "spec.serviceAllocation.namespaces", "", fmt.Errorf("has an empty entry"))
		return nil, false
	}
	if field, value, err := duplicateName("spec.serviceAllocation.namespaces", sa.Namespaces); err != nil {
		ps.invalid(obj, field, value, err)
		return nil, false
	}
	pool.Namespaces = slices.Sorted(slices.Values(sa.Namespaces))
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

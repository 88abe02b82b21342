package bgp

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// advert is what one prefix is advertised with: one path for all its peers.
type advert struct {
	localPref   uint32
	communities []uint32
	large       [][3]uint32
	// peers are the configured peers it goes to, sorted; markers their ids.
	peers   []string
	markers []uint32
}

func (a advert) equal(b advert) bool {
	return a.localPref == b.localPref &&
		slices.Equal(a.communities, b.communities) &&
		slices.Equal(a.large, b.large) &&
		slices.Equal(a.markers, b.markers)
}

// desiredAdverts folds paths into one advert per prefix, for the configured
// peers only. A prefix no configured peer should get is left out. Paths for
// one prefix with different attributes are merged and reported.
func desiredAdverts(paths []Path, peers map[string]PeerConfig, markers map[string]uint32) (map[netip.Prefix]advert, error) {
	type acc struct {
		first     Path
		conflict  bool
		localPref uint32
		comm      map[uint32]bool
		large     map[[3]uint32]bool
		peers     map[string]bool
	}
	byPrefix := map[netip.Prefix]*acc{}
	for _, p := range paths {
		pfx := p.Prefix.Masked()
		a, ok := byPrefix[pfx]
		if !ok {
			a = &acc{first: p, comm: map[uint32]bool{}, large: map[[3]uint32]bool{}, peers: map[string]bool{}}
			byPrefix[pfx] = a
		} else if !sameAttributes(a.first, p) {
			a.conflict = true
		}
		a.localPref = max(a.localPref, p.LocalPref)
		for _, c := range p.Communities {
			a.comm[c] = true
		}
		for _, c := range p.LargeCommunities {
			a.large[c] = true
		}
		if len(p.Peers) == 0 {
			for name := range peers {
				a.peers[name] = true
			}
		}
		for _, name := range p.Peers {
			if _, ok := peers[name]; ok {
				a.peers[name] = true
			}
		}
	}

	out := make(map[netip.Prefix]advert, len(byPrefix))
	var conflicts []netip.Prefix
	for pfx, a := range byPrefix {
		if a.conflict {
			conflicts = append(conflicts, pfx)
		}
		if len(a.peers) == 0 {
			continue
		}
		ad := advert{
			localPref:   a.localPref,
			communities: slices.Sorted(maps.Keys(a.comm)),
			large:       slices.SortedFunc(maps.Keys(a.large), compareLarge),
			peers:       slices.Sorted(maps.Keys(a.peers)),
		}
		for _, name := range ad.peers {
			ad.markers = append(ad.markers, markers[name])
		}
		slices.Sort(ad.markers)
		out[pfx] = ad
	}
	if len(conflicts) > 0 {
		slices.SortFunc(conflicts, netip.Prefix.Compare)
		return out, fmt.Errorf("prefixes %v: %w: advertised with the merged attributes to all their peers", conflicts, ErrConflictingAttributes)
	}
	return out, nil
}

func sameAttributes(a, b Path) bool {
	norm := func(p Path) ([]uint32, [][3]uint32) {
		c := slices.Clone(p.Communities)
		slices.Sort(c)
		l := slices.Clone(p.LargeCommunities)
		slices.SortFunc(l, compareLarge)
		return slices.Compact(c), slices.Compact(l)
	}
	ac, al := norm(a)
	bc, bl := norm(b)
	return a.LocalPref == b.LocalPref && slices.Equal(ac, bc) && slices.Equal(al, bl)
}

func compareLarge(a, b [3]uint32) int {
	return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]), cmp.Compare(a[2], b[2]))
}

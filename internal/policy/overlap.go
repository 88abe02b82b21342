package policy

import (
	"cmp"
	"slices"

	"go4.org/netipx"
)

// overlapPair says that entry of one pool overlaps otherEntry of otherPool
// (pools are indexes into the slice given to poolOverlaps).
type overlapPair struct {
	entry      int
	otherPool  int
	otherEntry int
	otherRange netipx.IPRange
}

// less orders the pairs of one pool for reporting: by this pool's entry,
// then by the other range's position in the address space.
func (a *overlapPair) less(b *overlapPair) bool {
	if a.entry != b.entry {
		return a.entry < b.entry
	}
	return a.otherRange.From().Less(b.otherRange.From())
}

// poolOverlaps finds, for each pool, the entries of other pools its entries
// overlap. nil pools (invalid ones) take no part. It sorts every range once
// and sweeps, keeping only the ranges still open at the current start, so
// the cost is O(n log n) plus the number of overlaps: with thousands of
// disjoint pools, as in a sound configuration, the open set stays tiny.
func poolOverlaps(pools []*Pool) [][]overlapPair {
	type entry struct {
		pool, index int
		r           netipx.IPRange
	}
	var all []entry
	for i, p := range pools {
		if p == nil {
			continue
		}
		for j, r := range p.Ranges {
			all = append(all, entry{pool: i, index: j, r: r})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := a.r.From().Compare(b.r.From()); c != 0 {
			return c
		}
		if c := a.r.To().Compare(b.r.To()); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.pool, b.pool), cmp.Compare(a.index, b.index))
	})
	out := make([][]overlapPair, len(pools))
	var open []entry
	for _, e := range all {
		// Drop ranges that end before this one starts (or belong to the
		// other address family, which Compare orders entirely before).
		kept := open[:0]
		for _, o := range open {
			if o.r.Overlaps(e.r) {
				kept = append(kept, o)
			}
		}
		open = kept
		for _, o := range open {
			if o.pool == e.pool {
				continue // overlaps inside one pool are checked with the pool
			}
			out[e.pool] = append(out[e.pool], overlapPair{entry: e.index, otherPool: o.pool, otherEntry: o.index, otherRange: o.r})
			out[o.pool] = append(out[o.pool], overlapPair{entry: o.index, otherPool: e.pool, otherEntry: e.index, otherRange: e.r})
		}
		open = append(open, e)
	}
	return out
}

// firstOverlap returns the indexes of two entries of rs that overlap each
// other, if any (i < j). Used for the entries of one pool.
func firstOverlap(rs []netipx.IPRange) (int, int, bool) {
	order := make([]int, len(rs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := rs[a].From().Compare(rs[b].From()); c != 0 {
			return c
		}
		return a - b
	})
	for k := 1; k < len(order); k++ {
		prev, cur := order[k-1], order[k]
		if rs[prev].Overlaps(rs[cur]) {
			return min(prev, cur), max(prev, cur), true
		}
	}
	return 0, 0, false
}

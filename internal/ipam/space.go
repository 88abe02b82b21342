package ipam

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"sort"
)

// u128 is an address as an unsigned integer: IPv4 in the low 32 bits, IPv6
// in all 128. Comparing two integers is much cheaper than netip.Addr.Compare
// in the allocator's hot path.
type u128 struct{ hi, lo uint64 }

func u128Of(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func (x u128) addr(f Family) netip.Addr {
	if f == IPv4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(x.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return netip.AddrFrom16(b)
}

func (x u128) less(y u128) bool { return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo) }

// inc returns x+1 and false when x is the largest value.
func (x u128) inc() (u128, bool) {
	lo, c := bits.Add64(x.lo, 1, 0)
	hi, c := bits.Add64(x.hi, 0, c)
	return u128{hi, lo}, c == 0
}

// dec returns x-1 and false when x is zero.
func (x u128) dec() (u128, bool) {
	lo, b := bits.Sub64(x.lo, 1, 0)
	hi, b := bits.Sub64(x.hi, 0, b)
	return u128{hi, lo}, b == 0
}

func (x u128) sub(y u128) u128 {
	lo, b := bits.Sub64(x.lo, y.lo, 0)
	hi, _ := bits.Sub64(x.hi, y.hi, b)
	return u128{hi, lo}
}

// addSat adds with saturation at the largest u128, which no real pool
// reaches but an absurd configuration (many overlapping /1 ranges) could.
func (x u128) addSat(y u128) u128 {
	lo, c := bits.Add64(x.lo, y.lo, 0)
	hi, c := bits.Add64(x.hi, y.hi, c)
	if c != 0 {
		return u128{math.MaxUint64, math.MaxUint64}
	}
	return u128{hi, lo}
}

// sat64 caps x to what a uint64 holds: an IPv6 /64 alone has 2^64 addresses.
func (x u128) sat64() uint64 {
	if x.hi != 0 {
		return math.MaxUint64
	}
	return x.lo
}

// buggy reports whether an IPv4 address ends in .0 or .255, which some old
// client firmware treats as a broadcast address.
func buggy(x u128) bool { b := byte(x.lo); return b == 0 || b == 255 }

// buggyUpTo counts the .0 and .255 addresses in [0, x] of the IPv4 space.
func buggyUpTo(x uint64) uint64 {
	n := 2*(x>>8) + 1
	if byte(x) == 255 {
		n++
	}
	return n
}

// span is an inclusive address range.
type span struct{ lo, hi u128 }

// space is the part of one pool in one family: its ranges, and the runs of
// held addresses inside them. Everything is expressed in the pool's own
// order of eligible addresses (in a range and, with avoidBuggy, not ending in
// .0/.255), so two runs separated only by ineligible addresses are one run.
// That keeps "lowest free address" a single lookup: the first eligible
// address, or the one right after the run that starts there.
type space struct {
	fam    Family
	spans  []span // sorted, disjoint, not adjacent
	avoid  bool   // skip buggy addresses (IPv4 only)
	used   treap  // maximal runs of held eligible addresses
	nUsed  uint64 // held eligible addresses
	nTotal u128   // eligible addresses
}

func newSpace(f Family, spans []span, avoid bool) *space {
	s := &space{fam: f, spans: spans, avoid: avoid && f == IPv4}
	for _, sp := range spans {
		n := sp.hi.sub(sp.lo)
		n, _ = n.inc()
		if n == (u128{}) { // the whole IPv6 space wrapped around
			n = u128{math.MaxUint64, math.MaxUint64}
		}
		if s.avoid {
			b := buggyUpTo(sp.hi.lo)
			if sp.lo.lo > 0 {
				b -= buggyUpTo(sp.lo.lo - 1)
			}
			n = n.sub(u128{lo: b})
		}
		s.nTotal = s.nTotal.addSat(n)
	}
	return s
}

func (s *space) sameShape(o *space) bool {
	if s.avoid != o.avoid || len(s.spans) != len(o.spans) {
		return false
	}
	for i := range s.spans {
		if s.spans[i] != o.spans[i] {
			return false
		}
	}
	return true
}

// spanAtOrAfter returns the index of the first span ending at or after x.
func (s *space) spanAtOrAfter(x u128) int {
	return sort.Search(len(s.spans), func(i int) bool { return !s.spans[i].hi.less(x) })
}

func (s *space) contains(x u128) bool {
	i := s.spanAtOrAfter(x)
	if i == len(s.spans) || x.less(s.spans[i].lo) {
		return false
	}
	return !s.avoid || !buggy(x)
}

// atOrAfter returns the smallest eligible address >= x.
func (s *space) atOrAfter(x u128) (u128, bool) {
	for {
		i := s.spanAtOrAfter(x)
		if i == len(s.spans) {
			return u128{}, false
		}
		if x.less(s.spans[i].lo) {
			x = s.spans[i].lo
		}
		if !s.avoid || !buggy(x) {
			return x, true
		}
		var ok bool
		if x, ok = x.inc(); !ok {
			return u128{}, false
		}
	}
}

// atOrBefore returns the largest eligible address <= x.
func (s *space) atOrBefore(x u128) (u128, bool) {
	for {
		// First span starting after x; the one before it is the candidate.
		i := sort.Search(len(s.spans), func(i int) bool { return x.less(s.spans[i].lo) })
		if i == 0 {
			return u128{}, false
		}
		if s.spans[i-1].hi.less(x) {
			x = s.spans[i-1].hi
		}
		if !s.avoid || !buggy(x) {
			return x, true
		}
		var ok bool
		if x, ok = x.dec(); !ok {
			return u128{}, false
		}
	}
}

func (s *space) next(x u128) (u128, bool) {
	y, ok := x.inc()
	if !ok {
		return u128{}, false
	}
	return s.atOrAfter(y)
}

func (s *space) prev(x u128) (u128, bool) {
	y, ok := x.dec()
	if !ok {
		return u128{}, false
	}
	return s.atOrBefore(y)
}

// lowestFree returns the lowest eligible address nobody holds. Runs are
// maximal, so the address after the first run is free.
func (s *space) lowestFree() (u128, bool) {
	if len(s.spans) == 0 {
		return u128{}, false
	}
	first, ok := s.atOrAfter(s.spans[0].lo)
	if !ok {
		return u128{}, false
	}
	n := s.used.floor(first)
	if n == nil || n.hi.less(first) {
		return first, true
	}
	return s.next(n.hi)
}

func (s *space) held(x u128) bool {
	n := s.used.floor(x)
	return n != nil && !n.hi.less(x)
}

// mark records x (eligible, not yet held) as held.
func (s *space) mark(x u128) {
	s.nUsed++
	p := s.used.floor(x)
	n := s.used.above(x)
	joinP := false
	if p != nil {
		if y, ok := s.next(p.hi); ok && y == x {
			joinP = true
		}
	}
	joinN := false
	if n != nil {
		if y, ok := s.next(x); ok && y == n.lo {
			joinN = true
		}
	}
	switch {
	case joinP && joinN:
		p.hi = n.hi
		s.used.delete(n.lo)
	case joinP:
		p.hi = x
	case joinN:
		// Lowering the key in place keeps the tree ordered: no other run
		// starts between x and n.lo.
		n.lo = x
	default:
		s.used.insert(x, x)
	}
}

// unmark records that x (held) is free again.
func (s *space) unmark(x u128) {
	n := s.used.floor(x)
	if n == nil || n.hi.less(x) {
		return
	}
	s.nUsed--
	switch {
	case n.lo == x && n.hi == x:
		s.used.delete(x)
	case n.lo == x:
		n.lo, _ = s.next(x)
	case n.hi == x:
		n.hi, _ = s.prev(x)
	default:
		hi := n.hi
		n.hi, _ = s.prev(x)
		lo, _ := s.next(x)
		s.used.insert(lo, hi)
	}
}

// treap is an ordered set of runs keyed by their first address. Priorities
// come from a fixed-seed generator; they shape the tree, never the answers.
type treap struct {
	root *node
	rng  uint64
	n    int
}

type node struct {
	lo, hi u128
	prio   uint64
	l, r   *node
}

// floor returns the run with the largest start <= x.
func (t *treap) floor(x u128) *node {
	var best *node
	for n := t.root; n != nil; {
		if x.less(n.lo) {
			n = n.l
		} else {
			best, n = n, n.r
		}
	}
	return best
}

// above returns the run with the smallest start > x.
func (t *treap) above(x u128) *node {
	var best *node
	for n := t.root; n != nil; {
		if x.less(n.lo) {
			best, n = n, n.l
		} else {
			n = n.r
		}
	}
	return best
}

func (t *treap) insert(lo, hi u128) {
	// splitmix64: cheap, and deterministic so test runs are repeatable.
	t.rng += 0x9e3779b97f4a7c15
	z := t.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	t.root = insertNode(t.root, &node{lo: lo, hi: hi, prio: z})
	t.n++
}

func insertNode(t, n *node) *node {
	if t == nil {
		return n
	}
	if n.prio > t.prio {
		n.l, n.r = split(t, n.lo)
		return n
	}
	if n.lo.less(t.lo) {
		t.l = insertNode(t.l, n)
	} else {
		t.r = insertNode(t.r, n)
	}
	return t
}

// split returns the nodes with keys < k and those with keys >= k.
func split(t *node, k u128) (*node, *node) {
	if t == nil {
		return nil, nil
	}
	if t.lo.less(k) {
		l, r := split(t.r, k)
		t.r = l
		return t, r
	}
	l, r := split(t.l, k)
	t.l = r
	return l, t
}

func merge(a, b *node) *node {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.r = merge(a.r, b)
		return a
	default:
		b.l = merge(a, b.l)
		return b
	}
}

func (t *treap) delete(lo u128) {
	p := &t.root
	for *p != nil {
		n := *p
		switch {
		case lo.less(n.lo):
			p = &n.l
		case n.lo.less(lo):
			p = &n.r
		default:
			*p = merge(n.l, n.r)
			t.n--
			return
		}
	}
}

// walk calls fn for each run in address order.
func (t *treap) walk(fn func(lo, hi u128)) {
	var rec func(*node)
	rec = func(n *node) {
		if n == nil {
			return
		}
		rec(n.l)
		fn(n.lo, n.hi)
		rec(n.r)
	}
	rec(t.root)
}

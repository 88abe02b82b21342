package ipam

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// spaceModel checks a space against brute force over a small window of
// addresses starting at base.
type spaceModel struct {
	t     testing.TB
	sp    *space
	base  u128
	width uint64
	held  map[u128]bool
}

func (m *spaceModel) at(i uint64) u128 {
	lo := m.base.lo + i
	hi := m.base.hi
	if lo < m.base.lo {
		hi++
	}
	return u128{hi, lo}
}

func (m *spaceModel) eligible() []u128 {
	var out []u128
	for i := range m.width {
		x := m.at(i)
		in := false
		for _, s := range m.sp.spans {
			in = in || (!x.less(s.lo) && !s.hi.less(x))
		}
		if in && (!m.sp.avoid || !buggy(x)) {
			out = append(out, x)
		}
	}
	return out
}

func (m *spaceModel) check(el []u128) {
	t := m.t
	t.Helper()
	var wantFree *u128
	for _, x := range el {
		if !m.sp.contains(x) {
			t.Fatalf("contains(%v) = false for an eligible address", x)
		}
		if m.sp.held(x) != m.held[x] {
			t.Fatalf("held(%v) = %v, want %v", x, m.sp.held(x), m.held[x])
		}
		if wantFree == nil && !m.held[x] {
			wantFree = &x
		}
	}
	got, ok := m.sp.lowestFree()
	if (wantFree == nil) == ok || (ok && got != *wantFree) {
		t.Fatalf("lowestFree() = %v, %v; want %v", got, ok, wantFree)
	}
	if m.sp.nUsed != uint64(len(m.held)) {
		t.Fatalf("nUsed = %d, want %d", m.sp.nUsed, len(m.held))
	}
	if m.sp.nTotal != (u128{lo: uint64(len(el))}) {
		t.Fatalf("nTotal = %v, want %d", m.sp.nTotal, len(el))
	}
	// Runs are maximal: nothing held right after a run, and they cover
	// exactly the held addresses.
	var prevHi *u128
	covered := 0
	m.sp.used.walk(func(lo, hi u128) {
		if prevHi != nil {
			if n, ok := m.sp.next(*prevHi); !ok || n == lo || lo.less(n) {
				t.Fatalf("runs not maximal or overlapping: run ends %v, next starts %v", *prevHi, lo)
			}
		}
		for x := lo; ; x, _ = m.sp.next(x) {
			if !m.held[x] {
				t.Fatalf("run %v-%v covers free %v", lo, hi, x)
			}
			covered++
			if x == hi {
				break
			}
		}
		prevHi = &hi
	})
	if covered != len(m.held) {
		t.Fatalf("runs cover %d addresses, %d held", covered, len(m.held))
	}
	// next and prev walk the eligible list.
	for i, x := range el {
		n, ok := m.sp.next(x)
		if i+1 < len(el) && (!ok || n != el[i+1]) {
			t.Fatalf("next(%v) = %v, %v; want %v", x, n, ok, el[i+1])
		}
		if i+1 == len(el) && ok {
			t.Fatalf("next(last %v) = %v, want none", x, n)
		}
		p, ok := m.sp.prev(x)
		if i > 0 && (!ok || p != el[i-1]) {
			t.Fatalf("prev(%v) = %v, %v; want %v", x, p, ok, el[i-1])
		}
		if i == 0 && ok {
			t.Fatalf("prev(first %v) = %v, want none", x, p)
		}
	}
}

func runSpace(t testing.TB, c chooser, fam Family, base u128, width uint64) {
	var spans []span
	at := uint64(c.intn(8))
	for at < width && len(spans) < 4 {
		n := uint64(1 + c.intn(int(width/3)+1))
		hi := min(at+n-1, width-1)
		m := spaceModel{base: base}
		spans = append(spans, span{m.at(at), m.at(hi)})
		at = hi + 2 + uint64(c.intn(6))
	}
	if len(spans) == 0 {
		return
	}
	sp := newSpace(fam, spans, c.intn(2) == 0)
	m := &spaceModel{t: t, sp: sp, base: base, width: width, held: map[u128]bool{}}
	el := m.eligible()
	m.check(el)
	for !c.done() && len(el) > 0 {
		x := el[c.intn(len(el))]
		if c.intn(3) == 0 {
			if y, ok := sp.lowestFree(); ok {
				x = y
			}
		}
		if m.held[x] {
			sp.unmark(x)
			delete(m.held, x)
		} else {
			sp.mark(x)
			m.held[x] = true
		}
		m.check(el)
	}
}

// Windows at the edges of the address spaces (overflow), across .255/.0
// boundaries (avoidBuggyIPs) and across the 64-bit halves of IPv6.
var spaceWindows = []struct {
	fam  Family
	base u128
}{
	{IPv4, u128{lo: 0}},
	{IPv4, u128{lo: 10<<24 | 250}},
	{IPv4, u128{lo: math.MaxUint32 - 299}},
	{IPv6, u128{hi: 0x20010db8 << 32, lo: math.MaxUint64 - 150}},
	{IPv6, u128{hi: math.MaxUint64, lo: math.MaxUint64 - 299}},
}

func TestSpaceAgainstBruteForce(t *testing.T) {
	for i, w := range spaceWindows {
		for seed := range 12 {
			t.Run(fmt.Sprintf("window%d/seed%d", i, seed), func(t *testing.T) {
				c := &randChooser{r: rand.New(rand.NewPCG(uint64(seed), uint64(i))), left: 400}
				runSpace(t, c, w.fam, w.base, 300)
			})
		}
	}
}

func FuzzSpace(f *testing.F) {
	f.Add(uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(4), []byte{200, 0, 255, 17, 3, 3, 3, 3, 3})
	f.Fuzz(func(t *testing.T, window uint8, data []byte) {
		w := spaceWindows[int(window)%len(spaceWindows)]
		runSpace(t, &byteChooser{b: data}, w.fam, w.base, 300)
	})
}

func TestTreapStaysOrdered(t *testing.T) {
	var tr treap
	r := rand.New(rand.NewPCG(7, 7))
	var keys []uint64
	for range 2000 {
		k := r.Uint64N(10000)
		if slices.Contains(keys, k) {
			tr.delete(u128{lo: k})
			keys = slices.DeleteFunc(keys, func(x uint64) bool { return x == k })
		} else {
			tr.insert(u128{lo: k}, u128{lo: k})
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var got []uint64
	tr.walk(func(lo, _ u128) { got = append(got, lo.lo) })
	if !slices.Equal(keys, got) || tr.n != len(keys) {
		t.Fatalf("treap holds %d keys (n=%d), want %d, or out of order", len(got), tr.n, len(keys))
	}
	for _, q := range []uint64{0, 1, 5000, 9999, 20000} {
		i, found := slices.BinarySearch(keys, q)
		var want *uint64
		if found {
			want = &keys[i]
		} else if i > 0 {
			want = &keys[i-1]
		}
		n := tr.floor(u128{lo: q})
		if (n == nil) != (want == nil) || (n != nil && n.lo.lo != *want) {
			t.Fatalf("floor(%d) = %v, want %v", q, n, want)
		}
	}
}

package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// chooser is where random choices come from: a seeded generator in the
// property test, the fuzzer's bytes in the fuzz test.
type chooser interface {
	intn(n int) int
	done() bool
}

type randChooser struct {
	r    *rand.Rand
	left int
}

func (c *randChooser) intn(n int) int { return c.r.IntN(n) }
func (c *randChooser) done() bool     { c.left--; return c.left < 0 }

type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0]) % n
	c.b = c.b[1:]
	return v
}
func (c *byteChooser) done() bool { return len(c.b) == 0 }

// Small pools, so that exhaustion, sharing and fragmentation happen often
// and a brute-force count is cheap. Configurations differ by shrinking,
// growing, renaming, toggling avoidBuggyIPs and overlapping.
var propConfigs = [][]Pool{
	{
		avoiding(mkPool("a", "10.0.0.250-10.0.1.5", "10.0.1.9/32")),
		mkPool("b", "10.0.2.0/29"),
		mkPool("c", "2001:db8:2::/125"),
		mkPool("d", "10.0.3.0/30", "2001:db8:3::/126"),
	},
	{
		avoiding(mkPool("a", "10.0.0.250-10.0.0.255")),
		mkPool("b", "10.0.2.0/29"),
		mkPool("d", "10.0.3.0/31", "2001:db8:3::/126", "2001:db8:2::4/126"),
		mkPool("e", "10.0.2.4/30"), // overlaps b
	},
	{
		mkPool("a2", "10.0.0.250-10.0.1.5", "10.0.1.9/32"),
		mkPool("b", "10.0.2.0/29"),
		mkPool("c", "2001:db8:2::/125"),
		mkPool("d", "10.0.3.0/30", "2001:db8:3::/126"),
	},
}

var propAddrs = ips("10.0.0.250", "10.0.0.255", "10.0.1.0", "10.0.1.1", "10.0.1.9", "10.0.2.3", "10.0.2.5",
	"10.0.3.1", "10.9.9.9", "2001:db8:2::1", "2001:db8:2::5", "2001:db8:3::2", "2001:db8:9::1")

type propState struct {
	t       testing.TB
	a, twin *Allocator // twin replays every call: answers must be identical
	pools   []Pool
	reqs    map[string]Request // the request behind each live assignment
	moved   map[string]bool    // pool changed by SetPools since the last request
	names   []string
	c       chooser
}

func newPropState(t testing.TB, c chooser) *propState {
	s := &propState{t: t, a: New(), twin: New(), reqs: map[string]Request{}, moved: map[string]bool{}, c: c}
	for i := range 10 {
		s.names = append(s.names, fmt.Sprintf("ns/s%d", i))
	}
	s.setPools(0)
	return s
}

func (s *propState) setPools(i int) {
	s.pools = propConfigs[i]
	got := s.a.SetPools(s.pools)
	twin := s.twin.SetPools(s.pools)
	if diff := cmp.Diff(got, twin); diff != "" {
		s.t.Fatalf("SetPools not deterministic (-first +second):\n%s", diff)
	}
	// A renamed pool carries its services out of their requests' pool lists
	// until the caller asks again.
	for name, r := range s.reqs {
		if as, ok := s.a.Assigned(name); ok && len(r.Pools) > 0 && !slices.Contains(r.Pools, as.Pool) {
			s.moved[name] = true
		}
	}
}

func (s *propState) randomRequest() Request {
	c := s.c
	r := Request{Service: s.names[c.intn(len(s.names))]}
	switch c.intn(4) {
	case 0:
		r.Families = v6
	case 1:
		r.Families = dual
	case 2:
		r.Families = []Family{IPv6, IPv4}
	default:
		r.Families = v4
	}
	r.RequireAll = c.intn(2) == 0
	if c.intn(4) == 0 {
		for range 1 + c.intn(2) {
			x := propAddrs[c.intn(len(propAddrs))]
			if !slices.ContainsFunc(r.Addresses, func(y netip.Addr) bool { return FamilyOf(y) == FamilyOf(x) }) {
				r.Addresses = append(r.Addresses, x)
			}
		}
	}
	var names []string
	for _, p := range s.pools {
		names = append(names, p.Name)
	}
	for range c.intn(3) + 1 - min(1, len(r.Addresses)) {
		r.Pools = append(r.Pools, names[c.intn(len(names))])
	}
	r.SharingKey = []string{"", "", "k1", "k2"}[c.intn(4)]
	r.Compat = []string{"cluster", "cluster", "local"}[c.intn(3)]
	ports := []Port{tcp(80), udp(53), tcp(53), {Port: 443}}
	for range c.intn(3) {
		r.Ports = append(r.Ports, ports[c.intn(len(ports))])
	}
	return r
}

func (s *propState) step() {
	c := s.c
	switch op := c.intn(20); {
	case op < 12:
		r := s.randomRequest()
		_, had := s.a.Assigned(r.Service)
		got, err := s.a.Allocate(r)
		s.compareTwin(got, err, func() (Assignment, error) { return s.twin.Allocate(r) })
		s.record(r, got, err)
		if err == nil && !had {
			s.checkLowest(r, got)
		}
		if errors.Is(err, ErrPoolExhausted) && r.RequireAll && len(r.Addresses) == 0 && r.SharingKey == "" {
			s.checkExhausted(r)
		}
	case op < 15:
		r := s.randomRequest()
		var addrs []netip.Addr
		if other, ok := s.a.Assigned(s.names[c.intn(len(s.names))]); ok && c.intn(2) == 0 {
			addrs = other.Addresses
		} else {
			addrs = []netip.Addr{propAddrs[c.intn(len(propAddrs))]}
		}
		got, err := s.a.Assign(r, addrs)
		s.compareTwin(got, err, func() (Assignment, error) { return s.twin.Assign(r, addrs) })
		s.record(r, got, err)
	case op < 19:
		name := s.names[c.intn(len(s.names))]
		if s.a.Release(name) != s.twin.Release(name) {
			s.t.Fatalf("Release(%s) not deterministic", name)
		}
		delete(s.reqs, name)
		delete(s.moved, name)
	default:
		s.setPools(c.intn(len(propConfigs)))
	}
	s.check()
}

func (s *propState) compareTwin(got Assignment, err error, twin func() (Assignment, error)) {
	s.t.Helper()
	got2, err2 := twin()
	if fmt.Sprint(err) != fmt.Sprint(err2) {
		s.t.Fatalf("same call, different errors: %v / %v", err, err2)
	}
	if diff := cmp.Diff(got, got2, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		s.t.Fatalf("same call, different answers (-first +second):\n%s", diff)
	}
}

// record tracks which request each live assignment answers. A failed call
// may have released the service (its old assignment no longer fitted), or
// left it untouched (the request was rejected outright).
func (s *propState) record(r Request, got Assignment, err error) {
	if err == nil {
		s.reqs[r.Service] = r
		delete(s.moved, r.Service)
		return
	}
	if _, ok := s.a.Assigned(r.Service); !ok {
		delete(s.reqs, r.Service)
		delete(s.moved, r.Service)
	}
}

func (s *propState) poolSpec(name string) (Pool, bool) {
	for _, p := range s.pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// inPool is the brute-force membership test.
func inPool(p Pool, x netip.Addr) bool {
	if p.AvoidBuggyIPs && x.Is4() && (x.As4()[3] == 0 || x.As4()[3] == 255) {
		return false
	}
	for _, r := range p.Ranges {
		if r.Contains(x) {
			return true
		}
	}
	return false
}

// eligible enumerates a (small) pool's addresses of a family, in order.
func eligible(p Pool, f Family) []netip.Addr {
	var out []netip.Addr
	for _, r := range p.Ranges {
		if FamilyOf(r.From()) != f {
			continue
		}
		for x := r.From(); x.IsValid() && x.Compare(r.To()) <= 0; x = x.Next() {
			if inPool(p, x) && !slices.Contains(out, x) {
				out = append(out, x)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (s *propState) check() {
	t := s.t
	t.Helper()
	orphans := s.a.Orphans()
	held := map[netip.Addr][]string{}
	for _, name := range s.names {
		as, ok := s.a.Assigned(name)
		r, known := s.reqs[name]
		if ok != known {
			t.Fatalf("%s: assigned=%v, but the test expects assigned=%v", name, ok, known)
		}
		if !ok {
			continue
		}
		for _, x := range as.Addresses {
			held[x] = append(held[x], name)
		}
		if slices.Contains(orphans, name) {
			continue
		}
		p, ok := s.poolSpec(as.Pool)
		if !ok {
			t.Fatalf("%s: assigned from pool %q, which is not configured and the service is no orphan", name, as.Pool)
		}
		var fams []Family
		for _, x := range as.Addresses {
			if !inPool(p, x) {
				t.Fatalf("%s: %v is not in its pool %q", name, x, as.Pool)
			}
			fams = append(fams, FamilyOf(x))
		}
		if len(r.Pools) > 0 && !slices.Contains(r.Pools, as.Pool) && !s.moved[name] {
			t.Fatalf("%s: pool %q is not among the request's %v", name, as.Pool, r.Pools)
		}
		if len(as.Addresses) == 0 || len(as.Addresses) > len(r.Families) ||
			((r.RequireAll || len(r.Families) == 1) && len(as.Addresses) != len(r.Families)) {
			t.Fatalf("%s: addresses %v do not fit families %v (requireAll=%v)", name, as.Addresses, r.Families, r.RequireAll)
		}
		for i, f := range fams {
			if !slices.Contains(r.Families, f) || (i == 1 && fams[0] == f) {
				t.Fatalf("%s: families of %v do not fit %v", name, as.Addresses, r.Families)
			}
		}
		if len(fams) == 2 && fams[0] != r.Families[0] {
			t.Fatalf("%s: addresses %v not in preference order %v", name, as.Addresses, r.Families)
		}
		if len(r.Addresses) > 0 && !sameSet(ipsUnmapped(r.Addresses), as.Addresses) {
			t.Fatalf("%s: got %v, requested %v", name, as.Addresses, r.Addresses)
		}
	}
	for x, names := range held {
		slices.Sort(names)
		if diff := cmp.Diff(names, s.a.Holders(x)); diff != "" {
			t.Fatalf("Holders(%v) (-from assignments +Holders):\n%s", x, diff)
		}
		for i := range names {
			for j := i + 1; j < len(names); j++ {
				if why := illegalShare(s.reqs[names[i]], s.reqs[names[j]]); why != "" {
					t.Fatalf("%v held by %s and %s: %s", x, names[i], names[j], why)
				}
			}
		}
	}
	for _, p := range s.pools {
		var want PoolStats
		for _, f := range []Family{IPv4, IPv6} {
			var used, free uint64
			for _, x := range eligible(p, f) {
				if len(held[x]) > 0 {
					used++
				} else {
					free++
				}
			}
			if f == IPv4 {
				want.AssignedIPv4, want.AvailableIPv4 = used, free
			} else {
				want.AssignedIPv6, want.AvailableIPv6 = used, free
			}
		}
		if diff := cmp.Diff(want, s.a.Stats(p.Name)); diff != "" {
			t.Fatalf("Stats(%s) (-brute force +got):\n%s", p.Name, diff)
		}
	}
}

func ipsUnmapped(xs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(xs))
	for i, x := range xs {
		out[i] = x.Unmap()
	}
	return out
}

func illegalShare(a, b Request) string {
	if a.SharingKey == "" || a.SharingKey != b.SharingKey {
		return fmt.Sprintf("sharing keys %q and %q", a.SharingKey, b.SharingKey)
	}
	if a.Compat != b.Compat {
		return fmt.Sprintf("compat %q and %q", a.Compat, b.Compat)
	}
	norm := func(p Port) Port {
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		return p
	}
	for _, p := range a.Ports {
		for _, q := range b.Ports {
			if norm(p) == norm(q) {
				return fmt.Sprintf("both use port %v", norm(p))
			}
		}
	}
	return ""
}

// checkLowest: a fresh automatic allocation without sharing takes, per
// family, the lowest free address of its pool.
func (s *propState) checkLowest(r Request, as Assignment) {
	if len(r.Addresses) > 0 || r.SharingKey != "" {
		return
	}
	p, _ := s.poolSpec(as.Pool)
	for _, x := range as.Addresses {
		for _, y := range eligible(p, FamilyOf(x)) {
			if y == x {
				break
			}
			if h := s.a.Holders(y); len(h) == 0 {
				s.t.Fatalf("%s got %v from %q, but %v is free and lower", r.Service, x, as.Pool, y)
			}
		}
	}
	// With one family, no earlier candidate pool may have had a free address.
	if len(r.Families) == 1 {
		for _, name := range r.Pools {
			if name == as.Pool {
				break
			}
			q, _ := s.poolSpec(name)
			for _, y := range eligible(q, r.Families[0]) {
				if len(s.a.Holders(y)) == 0 {
					s.t.Fatalf("%s got %v from %q, but earlier pool %q has %v free", r.Service, as.Addresses, as.Pool, name, y)
				}
			}
		}
	}
}

// checkExhausted: an exhaustion error is true, by brute force.
func (s *propState) checkExhausted(r Request) {
	for _, name := range r.Pools {
		p, _ := s.poolSpec(name)
		all := true
		for _, f := range r.Families {
			free := false
			for _, y := range eligible(p, f) {
				free = free || len(s.a.Holders(y)) == 0
			}
			all = all && free
		}
		if all {
			s.t.Fatalf("%s: exhausted, but pool %q has a free address of every family %v", r.Service, name, r.Families)
		}
	}
}

func TestProperties(t *testing.T) {
	seeds := 20
	ops := 3000
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			c := &randChooser{r: rand.New(rand.NewPCG(uint64(seed), 42)), left: ops}
			s := newPropState(t, c)
			for !c.done() {
				s.step()
			}
		})
	}
}

func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("allocate release share restore reconfigure"))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &byteChooser{b: data}
		s := newPropState(t, c)
		for !c.done() {
			s.step()
		}
	})
}

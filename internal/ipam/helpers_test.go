package ipam

import (
	"net/netip"
	"strings"
	"testing"

	"go4.org/netipx"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func ips(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = ip(s)
	}
	return out
}

// rng parses "a.b.c.d/n" or "from-to".
func rng(s string) netipx.IPRange {
	if from, to, ok := strings.Cut(s, "-"); ok {
		return netipx.IPRangeFrom(ip(from), ip(to))
	}
	return netipx.RangeOfPrefix(netip.MustParsePrefix(s))
}

func mkPool(name string, ranges ...string) Pool {
	p := Pool{Name: name}
	for _, r := range ranges {
		p.Ranges = append(p.Ranges, rng(r))
	}
	return p
}

func avoiding(p Pool) Pool { p.AvoidBuggyIPs = true; return p }

func newWith(t testing.TB, pools ...Pool) *Allocator {
	t.Helper()
	a := New()
	if o := a.SetPools(pools); len(o) != 0 {
		t.Fatalf("SetPools on empty allocator returned orphans %v", o)
	}
	return a
}

var v4 = []Family{IPv4}
var v6 = []Family{IPv6}
var dual = []Family{IPv4, IPv6}

func tcp(p int32) Port { return Port{Port: p, Protocol: "TCP"} }
func udp(p int32) Port { return Port{Port: p, Protocol: "UDP"} }

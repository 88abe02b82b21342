package ipam

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// step is one call on the allocator and what it must answer.
type step struct {
	req     Request      // for Allocate, or Assign when restore is set
	restore []netip.Addr // call Assign(req, restore) instead of Allocate
	release string       // call Release(release) instead
	pools   []Pool       // call SetPools(pools) instead; wantOrphans checked

	want        Assignment
	wantErr     error    // sentinel for errors.Is
	wantMsg     []string // substrings of the error message
	wantOrphans []string
}

func run(t *testing.T, a *Allocator, steps []step) {
	t.Helper()
	for i, s := range steps {
		switch {
		case s.release != "":
			a.Release(s.release)
			continue
		case s.pools != nil:
			got := a.SetPools(s.pools)
			if diff := cmp.Diff(s.wantOrphans, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("step %d: SetPools orphans (-want +got):\n%s", i, diff)
			}
			continue
		}
		var got Assignment
		var err error
		op := "Allocate"
		if s.restore != nil {
			op = "Assign"
			got, err = a.Assign(s.req, s.restore)
		} else {
			got, err = a.Allocate(s.req)
		}
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("step %d: %s(%s) error = %v, want %v", i, op, s.req.Service, err, s.wantErr)
			}
			for _, m := range s.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("step %d: %s(%s) error %q does not mention %q", i, op, s.req.Service, err, m)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %s(%s) unexpected error: %v", i, op, s.req.Service, err)
		}
		if diff := cmp.Diff(s.want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Fatalf("step %d: %s(%s) (-want +got):\n%s", i, op, s.req.Service, diff)
		}
	}
}

func got(pool string, addrs ...string) Assignment {
	return Assignment{Pool: pool, Addresses: ips(addrs...)}
}

func TestAllocate(t *testing.T) {
	example := mkPool("first-pool", "172.25.254.50-172.25.254.99")
	small := mkPool("small", "10.0.0.0/31")
	other := mkPool("other", "10.1.0.0/24")
	dualPool := mkPool("dual", "10.2.0.0/24", "2001:db8:2::/64")
	v6Pool := mkPool("six", "2001:db8:6::/64")

	tests := []struct {
		name  string
		pools []Pool
		steps []step
	}{
		{
			name:  "lowest free address, in order",
			pools: []Pool{example},
			steps: []step{
				{req: Request{Service: "ns/dhj-service", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.50")},
				{req: Request{Service: "ns/second", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.51")},
			},
		},
		{
			name:  "pools are tried in the request's order",
			pools: []Pool{small, other},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"other", "small"}}, want: got("other", "10.1.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"small", "other"}}, want: got("small", "10.0.0.0")},
			},
		},
		{
			name:  "full pool falls through to the next, then exhaustion names the pools",
			pools: []Pool{small, mkPool("tiny", "10.1.0.7/32")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"small", "tiny"}}, want: got("small", "10.0.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"small", "tiny"}}, want: got("small", "10.0.0.1")},
				{req: Request{Service: "ns/c", Families: v4, Pools: []string{"small", "tiny"}}, want: got("tiny", "10.1.0.7")},
				{req: Request{Service: "ns/d", Families: v4, Pools: []string{"small", "tiny"}}, wantErr: ErrPoolExhausted, wantMsg: []string{`"small", "tiny"`, "IPv4"}},
			},
		},
		{
			name:  "a released address is the next one handed out",
			pools: []Pool{example},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.50")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.51")},
				{req: Request{Service: "ns/c", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.52")},
				{release: "ns/b"},
				{req: Request{Service: "ns/d", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.51")},
				{req: Request{Service: "ns/e", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.53")},
			},
		},
		{
			name:  "avoidBuggyIPs skips .255 and .0",
			pools: []Pool{avoiding(mkPool("p", "10.0.0.254-10.0.1.1"))},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.254")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.1.1")},
				{req: Request{Service: "ns/c", Families: v4, Pools: []string{"p"}}, wantErr: ErrPoolExhausted},
				{req: Request{Service: "ns/d", Families: v4, Addresses: ips("10.0.1.0")}, wantErr: ErrNotInAnyPool, wantMsg: []string{"10.0.1.0", `pool "p" avoids`}},
			},
		},
		{
			name:  "without avoidBuggyIPs .255 and .0 are ordinary",
			pools: []Pool{mkPool("p", "10.0.0.255-10.0.1.0")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.255")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.1.0")},
			},
		},
		{
			name:  "avoidBuggyIPs leaves IPv6 alone",
			pools: []Pool{avoiding(mkPool("p", "2001:db8::ff-2001:db8::100"))},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v6, Pools: []string{"p"}}, want: got("p", "2001:db8::ff")},
				{req: Request{Service: "ns/b", Families: v6, Pools: []string{"p"}}, want: got("p", "2001:db8::100")},
			},
		},
		{
			name:  "ranges of a pool are used in address order, gaps skipped",
			pools: []Pool{mkPool("p", "10.0.0.9/32", "10.0.0.2-10.0.0.3")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.2")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.3")},
				{req: Request{Service: "ns/c", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.9")},
			},
		},
		{
			name:  "requested address",
			pools: []Pool{example, other},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("172.25.254.77")}, want: got("first-pool", "172.25.254.77")},
				{req: Request{Service: "ns/b", Families: v4, Addresses: ips("10.1.0.9"), Pools: []string{"other"}}, want: got("other", "10.1.0.9")},
				{req: Request{Service: "ns/c", Families: v4, Addresses: ips("172.25.254.77")}, wantErr: ErrAddressInUse, wantMsg: []string{"172.25.254.77", `"ns/a"`}},
				{req: Request{Service: "ns/d", Families: v4, Addresses: ips("10.99.0.1")}, wantErr: ErrNotInAnyPool, wantMsg: []string{"10.99.0.1"}},
				{req: Request{Service: "ns/e", Families: v4, Addresses: ips("10.1.0.10"), Pools: []string{"first-pool"}}, wantErr: ErrPoolNotAllowed, wantMsg: []string{`pool "other"`, `"first-pool"`}},
				{req: Request{Service: "ns/f", Families: v4, Pools: []string{"nope"}}, wantErr: ErrUnknownPool, wantMsg: []string{`"nope"`}},
				// Automatic allocation does not take the requested address.
				{req: Request{Service: "ns/g", Families: v4, Pools: []string{"first-pool"}}, want: got("first-pool", "172.25.254.50")},
			},
		},
		{
			name:  "requested address in use: typed error names holder",
			pools: []Pool{example},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("172.25.254.60")}, want: got("first-pool", "172.25.254.60")},
				{req: Request{Service: "ns/b", Families: v4, Addresses: ips("172.25.254.60"), SharingKey: "k"}, wantErr: ErrAddressInUse, wantMsg: []string{"does not share"}},
			},
		},
		{
			name:  "requested addresses must be in one pool",
			pools: []Pool{other, v6Pool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, Addresses: ips("10.1.0.1", "2001:db8:6::1")}, wantErr: ErrNotInAnyPool, wantMsg: []string{"not in one pool", `"other"`, `"six"`}},
			},
		},
		{
			name:  "requested dual-stack addresses come back in family order",
			pools: []Pool{dualPool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: []Family{IPv6, IPv4}, Addresses: ips("10.2.0.5", "2001:db8:2::5")}, want: got("dual", "2001:db8:2::5", "10.2.0.5")},
			},
		},
		{
			name:  "families: single stack of each family",
			pools: []Pool{dualPool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v6, Pools: []string{"dual"}}, want: got("dual", "2001:db8:2::")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"dual"}}, want: got("dual", "10.2.0.0")},
				{req: Request{Service: "ns/c", Families: dual, RequireAll: true, Pools: []string{"dual"}}, want: got("dual", "10.2.0.1", "2001:db8:2::1")},
				{req: Request{Service: "ns/d", Families: []Family{IPv6, IPv4}, Pools: []string{"dual"}}, want: got("dual", "2001:db8:2::2", "10.2.0.2")},
			},
		},
		{
			name:  "single stack of a family no pool offers",
			pools: []Pool{other, small},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v6, Pools: []string{"other", "small"}}, wantErr: ErrFamilyUnavailable, wantMsg: []string{`"other", "small"`, "IPv6"}},
			},
		},
		{
			name:  "RequireAll needs one pool with both families",
			pools: []Pool{other, v6Pool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true, Pools: []string{"other", "six"}}, wantErr: ErrFamilyUnavailable, wantMsg: []string{"both"}},
			},
		},
		{
			name:  "PreferDualStack takes a dual pool over an earlier single-family one",
			pools: []Pool{other, dualPool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, Pools: []string{"other", "dual"}}, want: got("dual", "10.2.0.0", "2001:db8:2::")},
			},
		},
		{
			name:  "PreferDualStack gets one family when no pool has both",
			pools: []Pool{v6Pool, other},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, Pools: []string{"six", "other"}}, want: got("other", "10.1.0.0")},
				{req: Request{Service: "ns/b", Families: dual, Pools: []string{"six"}}, want: got("six", "2001:db8:6::")},
			},
		},
		{
			name:  "PreferDualStack with no pool of either family",
			pools: []Pool{v6Pool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"six"}}, wantErr: ErrFamilyUnavailable},
			},
		},
		{
			name:  "RequireAll dual-stack: exhausted IPv4 half moves to the next dual pool, then fails",
			pools: []Pool{mkPool("d1", "10.3.0.1/32", "2001:db8:3::/126"), mkPool("d2", "10.4.0.1/32", "2001:db8:4::/126")},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true, Pools: []string{"d1", "d2"}}, want: got("d1", "10.3.0.1", "2001:db8:3::")},
				{req: Request{Service: "ns/b", Families: dual, RequireAll: true, Pools: []string{"d1", "d2"}}, want: got("d2", "10.4.0.1", "2001:db8:4::")},
				{req: Request{Service: "ns/c", Families: dual, RequireAll: true, Pools: []string{"d1", "d2"}}, wantErr: ErrPoolExhausted, wantMsg: []string{`"d1", "d2"`}},
				// PreferDualStack still gets the IPv6 half.
				{req: Request{Service: "ns/d", Families: dual, Pools: []string{"d1", "d2"}}, want: got("d1", "2001:db8:3::1")},
			},
		},
		{
			name:  "RequireAll with a requested address of only one family",
			pools: []Pool{dualPool},
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true, Addresses: ips("10.2.0.9")}, wantErr: ErrFamilyUnavailable},
			},
		},
		{
			name:  "no candidate pool",
			pools: []Pool{other},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4}, wantErr: ErrNoPool},
			},
		},
		{
			name:  "invalid requests",
			pools: []Pool{other},
			steps: []step{
				{req: Request{Families: v4, Pools: []string{"other"}}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Pools: []string{"other"}}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Families: []Family{IPv4, IPv4}, Pools: []string{"other"}}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Families: []Family{5}, Pools: []string{"other"}}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.1.0.1", "10.1.0.2")}, wantErr: ErrInvalidRequest, wantMsg: []string{"one address per family"}},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("2001:db8:6::1")}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Families: v4, Addresses: []netip.Addr{{}}}, wantErr: ErrInvalidRequest},
			},
		},
		{
			name:  "IPv4-mapped IPv6 requests are unmapped",
			pools: []Pool{other},
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("::ffff:10.1.0.3")}, want: got("other", "10.1.0.3")},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newWith(t, tc.pools...), tc.steps)
		})
	}
}

func TestSharing(t *testing.T) {
	p := mkPool("p", "10.0.0.0/24")
	q := mkPool("q", "10.9.0.0/24")
	share := func(svc, key, compat string, ports ...Port) Request {
		return Request{Service: svc, Families: v4, Pools: []string{"p"}, SharingKey: key, Compat: compat, Ports: ports}
	}
	ask := func(r Request, addr string) Request { r.Addresses = ips(addr); return r }

	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "same key, different ports: same address",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(443)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "same port, different protocol: same address",
			steps: []step{
				{req: share("ns/dns-tcp", "k", "c", tcp(53)), want: got("p", "10.0.0.0")},
				{req: share("ns/dns-udp", "k", "c", udp(53)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "empty protocol means TCP",
			steps: []step{
				{req: share("ns/a", "k", "c", Port{Port: 80}), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(80)), want: got("p", "10.0.0.1")},
				{req: ask(share("ns/c", "k", "c", Port{Port: 80, Protocol: "tcp"}), "10.0.0.0"), wantErr: ErrIncompatibleSharing, wantMsg: []string{"port 80/TCP", `"ns/a"`}},
			},
		},
		{
			name: "automatic: overlapping port gives a fresh address",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(80)), want: got("p", "10.0.0.1")},
				// A third one fits next to either: the lowest.
				{req: share("ns/c", "k", "c", tcp(8080)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "automatic: different key or compat gives a fresh address",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "other", "c", tcp(443)), want: got("p", "10.0.0.1")},
				{req: share("ns/c", "k", "local/app=x", tcp(443)), want: got("p", "10.0.0.2")},
				{req: share("ns/d", "", "c", tcp(443)), want: got("p", "10.0.0.3")},
			},
		},
		{
			name: "sharing is preferred over a fresh address, even a lower one",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "", "", tcp(80)), want: got("p", "10.0.0.1")},
				{release: "ns/a"},
				// 10.0.0.0 is free again; b's address has no key, c shares nothing.
				{req: share("ns/c", "k", "c", tcp(443)), want: got("p", "10.0.0.0")},
				{req: share("ns/d", "k", "c", tcp(22)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "sharing is preferred over pool order",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"q"}, SharingKey: "k", Ports: []Port{tcp(80)}}, want: got("q", "10.9.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p", "q"}, SharingKey: "k", Ports: []Port{tcp(443)}}, want: got("q", "10.9.0.0")},
			},
		},
		{
			name: "requested shared address: each conflict named",
			steps: []step{
				{req: ask(share("ns/a", "k", "c", tcp(80)), "10.0.0.7"), want: got("p", "10.0.0.7")},
				{req: ask(share("ns/b", "k", "c", tcp(443)), "10.0.0.7"), want: got("p", "10.0.0.7")},
				{req: ask(share("ns/c", "k", "c", tcp(443)), "10.0.0.7"), wantErr: ErrIncompatibleSharing, wantMsg: []string{"port 443/TCP", `"ns/b"`}},
				{req: ask(share("ns/d", "k2", "c", tcp(22)), "10.0.0.7"), wantErr: ErrIncompatibleSharing, wantMsg: []string{`sharing key is "k"`, `"ns/a", "ns/b"`}},
				{req: ask(share("ns/e", "k", "c2", tcp(22)), "10.0.0.7"), wantErr: ErrIncompatibleSharing, wantMsg: []string{`"c"`, `"c2"`}},
				{req: ask(share("ns/f", "", "c", tcp(22)), "10.0.0.7"), wantErr: ErrAddressInUse},
			},
		},
		{
			name: "release of one sharer keeps the address for the other",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(443)), want: got("p", "10.0.0.0")},
				{release: "ns/a"},
				{req: share("ns/c", "", "", tcp(80)), want: got("p", "10.0.0.1")},
				{release: "ns/b"},
				{req: share("ns/d", "", "", tcp(80)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "a sharer changing to a clashing port moves",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(443)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(443), tcp(8443)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(80)), want: got("p", "10.0.0.1")},
			},
		},
		{
			name: "a lone holder may change its key, and then shares under the new one",
			steps: []step{
				{req: share("ns/a", "k", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/a", "k2", "c", tcp(80)), want: got("p", "10.0.0.0")},
				{req: share("ns/b", "k", "c", tcp(443)), want: got("p", "10.0.0.1")},
				{req: share("ns/c", "k2", "c", tcp(443)), want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "dual-stack sharer shares the family it can",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"d"}, SharingKey: "k", Ports: []Port{tcp(80)}}, want: got("d", "10.5.0.0")},
				{req: Request{Service: "ns/x", Families: v4, Pools: []string{"d"}}, want: got("d", "10.5.0.1")},
				{req: Request{Service: "ns/b", Families: dual, RequireAll: true, Pools: []string{"d"}, SharingKey: "k", Ports: []Port{tcp(443)}}, want: got("d", "10.5.0.0", "2001:db8:5::")},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newWith(t, p, q, mkPool("d", "10.5.0.0/24", "2001:db8:5::/120")), tc.steps)
		})
	}
}

func TestStability(t *testing.T) {
	p := mkPool("p", "10.0.0.0/24")
	q := mkPool("q", "10.1.0.0/24")
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "same request keeps the address even when a lower one frees up",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.1")},
				{release: "ns/a"},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.1")},
			},
		},
		{
			name: "reordered candidate pools keep the address",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p", "q"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"q", "p"}}, want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "pool no longer a candidate: moves",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"q"}}, want: got("q", "10.1.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "requested address changes: moves; the same requested address again: kept",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.9")}, want: got("p", "10.0.0.9")},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.1.0.9")}, want: got("q", "10.1.0.9")},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.1.0.9")}, want: got("q", "10.1.0.9")},
				{req: Request{Service: "ns/b", Families: v4, Addresses: ips("10.0.0.9")}, want: got("p", "10.0.0.9")},
			},
		},
		{
			name: "requesting the address already held automatically keeps it",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.0")}, want: got("p", "10.0.0.0")},
			},
		},
		{
			name: "a failed move leaves nothing held",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.5")}, want: got("p", "10.0.0.5")},
				{req: Request{Service: "ns/b", Families: v4, Addresses: ips("10.0.0.6")}, want: got("p", "10.0.0.6")},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.6")}, wantErr: ErrAddressInUse},
				{req: Request{Service: "ns/c", Families: v4, Addresses: ips("10.0.0.5")}, want: got("p", "10.0.0.5")},
			},
		},
		{
			name: "a malformed request releases nothing",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.1", "10.0.0.2")}, wantErr: ErrInvalidRequest},
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true, Addresses: ips("10.0.0.1")}, wantErr: ErrFamilyUnavailable},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"gone"}}, wantErr: ErrUnknownPool},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.1")},
			},
		},
		{
			name: "single stack to RequireAll dual: reallocated",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"d"}}, want: got("d", "10.5.0.0")},
				{req: Request{Service: "ns/a", Families: dual, Pools: []string{"d"}}, want: got("d", "10.5.0.0")},
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true, Pools: []string{"d"}}, want: got("d", "10.5.0.0", "2001:db8:5::")},
				{req: Request{Service: "ns/a", Families: v6, Pools: []string{"d"}}, want: got("d", "2001:db8:5::")},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newWith(t, p, q, mkPool("d", "10.5.0.0/24", "2001:db8:5::/120")), tc.steps)
		})
	}
}

func TestAssign(t *testing.T) {
	p := mkPool("p", "10.0.0.0/24")
	q := mkPool("q", "10.1.0.0/24")
	d := mkPool("d", "10.5.0.0/24", "2001:db8:5::/120")
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "restore keeps the observed address, whatever the pool order",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p", "q"}}, restore: ips("10.1.0.40"), want: got("q", "10.1.0.40")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"q"}}, want: got("q", "10.1.0.0")},
				// Allocate with the same request does not move it.
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p", "q"}}, want: got("q", "10.1.0.40")},
			},
		},
		{
			name: "restore of an address held by another service fails with its name",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4}, restore: ips("10.0.0.3"), want: got("p", "10.0.0.3")},
				{req: Request{Service: "ns/b", Families: v4}, restore: ips("10.0.0.3"), wantErr: ErrAddressInUse, wantMsg: []string{`"ns/a"`}},
			},
		},
		{
			name: "restore of a legally shared address",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, SharingKey: "k", Ports: []Port{tcp(80)}}, restore: ips("10.0.0.3"), want: got("p", "10.0.0.3")},
				{req: Request{Service: "ns/b", Families: v4, SharingKey: "k", Ports: []Port{tcp(81)}}, restore: ips("10.0.0.3"), want: got("p", "10.0.0.3")},
				{req: Request{Service: "ns/c", Families: v4, SharingKey: "k", Ports: []Port{tcp(81)}}, restore: ips("10.0.0.3"), wantErr: ErrIncompatibleSharing},
			},
		},
		{
			name: "restore outside every pool, or outside the candidates",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4}, restore: ips("10.7.0.1"), wantErr: ErrNotInAnyPool},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, restore: ips("10.1.0.1"), wantErr: ErrPoolNotAllowed},
			},
		},
		{
			name: "restore that no longer matches the request",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.9")}, restore: ips("10.0.0.8"), wantErr: ErrMismatch, wantMsg: []string{"10.0.0.9"}},
				{req: Request{Service: "ns/a", Families: v6}, restore: ips("10.5.0.8"), wantErr: ErrMismatch},
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true}, restore: ips("10.5.0.8"), wantErr: ErrMismatch},
				{req: Request{Service: "ns/a", Families: v4}, restore: []netip.Addr{}, wantErr: ErrInvalidRequest},
			},
		},
		{
			name: "restore dual-stack, then PreferDualStack keeps one family",
			steps: []step{
				{req: Request{Service: "ns/a", Families: dual, RequireAll: true}, restore: ips("2001:db8:5::7", "10.5.0.7"), want: got("d", "10.5.0.7", "2001:db8:5::7")},
				{req: Request{Service: "ns/b", Families: dual}, restore: ips("2001:db8:5::8"), want: got("d", "2001:db8:5::8")},
			},
		},
		{
			name: "restore of a different address moves the service",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, restore: ips("10.0.0.5"), want: got("p", "10.0.0.5")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newWith(t, p, q, d), tc.steps)
		})
	}
}

func TestSetPools(t *testing.T) {
	p := mkPool("p", "10.0.0.0/30")
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "shrink orphans the services outside, keeps their addresses held",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.1")},
				{req: Request{Service: "ns/c", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.2")},
				{pools: []Pool{mkPool("p", "10.0.0.1/32")}, wantOrphans: []string{"ns/a", "ns/c"}},
				// Growing back does not hand out the orphans' addresses.
				{pools: []Pool{mkPool("p", "10.0.0.0/30")}, wantOrphans: nil},
				{req: Request{Service: "ns/d", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.3")},
			},
		},
		{
			name: "an orphan is reallocated by Allocate, and stays orphaned until then",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{pools: []Pool{mkPool("p", "10.0.0.2/31")}, wantOrphans: []string{"ns/a"}},
				{pools: []Pool{mkPool("p", "10.0.0.2/31"), mkPool("x", "10.9.0.0/24")}, wantOrphans: []string{"ns/a"}},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.2")},
				{pools: []Pool{mkPool("p", "10.0.0.2/31")}, wantOrphans: nil},
			},
		},
		{
			name: "a renamed pool carries its services",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{pools: []Pool{mkPool("renamed", "10.0.0.0/30")}, wantOrphans: nil},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"renamed"}}, want: got("renamed", "10.0.0.0")},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"renamed"}}, want: got("renamed", "10.0.0.1")},
			},
		},
		{
			name: "turning on avoidBuggyIPs orphans a .0 holder",
			steps: []step{
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.0")},
				{pools: []Pool{avoiding(mkPool("p", "10.0.0.0/30"))}, wantOrphans: []string{"ns/a"}},
				{req: Request{Service: "ns/b", Families: v4, Pools: []string{"p"}}, want: got("p", "10.0.0.1")},
			},
		},
		{
			name: "a removed pool is unknown to requests",
			steps: []step{
				{pools: []Pool{}, wantOrphans: nil},
				{req: Request{Service: "ns/a", Families: v4, Pools: []string{"p"}}, wantErr: ErrUnknownPool},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run(t, newWith(t, p), tc.steps)
		})
	}
}

func TestHoldersAndAssigned(t *testing.T) {
	a := newWith(t, mkPool("p", "10.0.0.0/24"))
	for _, svc := range []string{"ns/b", "ns/a"} {
		if _, err := a.Allocate(Request{Service: svc, Families: v4, Pools: []string{"p"}, SharingKey: "k", Ports: []Port{tcp(int32(len(svc) + int(svc[3])))}}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"ns/a", "ns/b"}, a.Holders(ip("10.0.0.0"))); diff != "" {
		t.Errorf("Holders(10.0.0.0) (-want +got):\n%s", diff)
	}
	if h := a.Holders(ip("::ffff:10.0.0.0")); len(h) != 2 {
		t.Errorf("Holders(::ffff:10.0.0.0) = %v, want the two holders of 10.0.0.0", h)
	}
	if h := a.Holders(ip("10.0.0.1")); h != nil {
		t.Errorf("Holders(10.0.0.1) = %v, want none", h)
	}
	as, ok := a.Assigned("ns/a")
	if !ok || as.Pool != "p" || len(as.Addresses) != 1 || as.Addresses[0] != ip("10.0.0.0") {
		t.Errorf("Assigned(ns/a) = %v, %v; want p 10.0.0.0", as, ok)
	}
	as.Addresses[0] = ip("10.0.0.99") // the caller's copy
	if as, _ := a.Assigned("ns/a"); as.Addresses[0] != ip("10.0.0.0") {
		t.Errorf("Assigned returned the allocator's own slice")
	}
	if !a.Release("ns/a") || a.Release("ns/a") {
		t.Errorf("Release(ns/a) twice: want true then false")
	}
	if _, ok := a.Assigned("ns/a"); ok {
		t.Errorf("Assigned(ns/a) after Release: still assigned")
	}
}

func TestStats(t *testing.T) {
	tests := []struct {
		name   string
		pool   Pool
		alloc4 int
		alloc6 int
		want   PoolStats
	}{
		{name: "IPv4 /24", pool: mkPool("p", "10.0.0.0/24"), alloc4: 3, want: PoolStats{AssignedIPv4: 3, AvailableIPv4: 253}},
		{name: "IPv4 /24 avoiding buggy", pool: avoiding(mkPool("p", "10.0.0.0/24")), alloc4: 3, want: PoolStats{AssignedIPv4: 3, AvailableIPv4: 251}},
		{name: "IPv4 range across /24s avoiding buggy", pool: avoiding(mkPool("p", "10.0.0.200-10.0.2.10")), want: PoolStats{AvailableIPv4: 56 + 256 + 11 - 4}},
		{name: "IPv4 whole space avoiding buggy", pool: avoiding(mkPool("p", "0.0.0.0/0")), want: PoolStats{AvailableIPv4: 1<<32 - 2*(1<<24)}},
		{name: "overlapping ranges count once", pool: mkPool("p", "10.0.0.0/24", "10.0.0.128/25", "10.0.0.255-10.0.1.1"), want: PoolStats{AvailableIPv4: 258}},
		{name: "IPv6 /120", pool: mkPool("p", "2001:db8::/120"), alloc6: 2, want: PoolStats{AssignedIPv6: 2, AvailableIPv6: 254}},
		{name: "IPv6 /64 empty saturates", pool: mkPool("p", "2001:db8::/64"), want: PoolStats{AvailableIPv6: math.MaxUint64}},
		{name: "IPv6 /64 with one used is exact", pool: mkPool("p", "2001:db8::/64"), alloc6: 1, want: PoolStats{AssignedIPv6: 1, AvailableIPv6: math.MaxUint64}},
		{name: "IPv6 /64 with two used is exact", pool: mkPool("p", "2001:db8::/64"), alloc6: 2, want: PoolStats{AssignedIPv6: 2, AvailableIPv6: math.MaxUint64 - 1}},
		{name: "IPv6 /48 saturates", pool: mkPool("p", "2001:db8::/48"), alloc6: 5, want: PoolStats{AssignedIPv6: 5, AvailableIPv6: math.MaxUint64}},
		{name: "IPv6 everything saturates", pool: mkPool("p", "::/0"), alloc6: 1, want: PoolStats{AssignedIPv6: 1, AvailableIPv6: math.MaxUint64}},
		{name: "dual", pool: mkPool("p", "10.0.0.0/30", "2001:db8::/126"), alloc4: 1, alloc6: 4, want: PoolStats{AssignedIPv4: 1, AvailableIPv4: 3, AssignedIPv6: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newWith(t, tc.pool)
			for i := range tc.alloc4 {
				if _, err := a.Allocate(Request{Service: "v4/" + string(rune('a'+i)), Families: v4, Pools: []string{"p"}}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range tc.alloc6 {
				if _, err := a.Allocate(Request{Service: "v6/" + string(rune('a'+i)), Families: v6, Pools: []string{"p"}}); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tc.want, a.Stats("p")); diff != "" {
				t.Errorf("Stats(p) (-want +got):\n%s", diff)
			}
		})
	}
	if got := New().Stats("nope"); got != (PoolStats{}) {
		t.Errorf("Stats(unknown) = %+v, want zero", got)
	}
}

func TestSharedAddressCountsOnce(t *testing.T) {
	a := newWith(t, mkPool("p", "10.0.0.0/30"))
	for i, svc := range []string{"ns/a", "ns/b", "ns/c"} {
		if _, err := a.Allocate(Request{Service: svc, Families: v4, Pools: []string{"p"}, SharingKey: "k", Ports: []Port{tcp(int32(80 + i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(PoolStats{AssignedIPv4: 1, AvailableIPv4: 3}, a.Stats("p")); diff != "" {
		t.Errorf("Stats(p) (-want +got):\n%s", diff)
	}
}

func TestErrorTypes(t *testing.T) {
	a := newWith(t, mkPool("p", "10.0.0.0/24"))
	if _, err := a.Allocate(Request{Service: "ns/a", Families: v4, Addresses: ips("10.0.0.1"), SharingKey: "k", Ports: []Port{tcp(80)}}); err != nil {
		t.Fatal(err)
	}
	_, err := a.Allocate(Request{Service: "ns/b", Families: v4, Addresses: ips("10.0.0.1")})
	var inUse *AddressInUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("Allocate of a held address: error %v is not an *AddressInUseError", err)
	}
	if diff := cmp.Diff(&AddressInUseError{Addr: ip("10.0.0.1"), By: []string{"ns/a"}}, inUse, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("AddressInUseError (-want +got):\n%s", diff)
	}
	_, err = a.Allocate(Request{Service: "ns/b", Families: v4, Addresses: ips("10.0.0.1"), SharingKey: "k", Ports: []Port{tcp(80)}})
	var sh *SharingError
	if !errors.As(err, &sh) || sh.Addr != ip("10.0.0.1") || len(sh.By) != 1 || !strings.Contains(sh.Reason, "80/TCP") {
		t.Errorf("Allocate with a clashing port: error %#v, want a *SharingError about 80/TCP", err)
	}
	if errors.Is(err, ErrAddressInUse) {
		t.Errorf("a SharingError also matches ErrAddressInUse: callers could not tell them apart")
	}
}

func TestConcurrentAllocateNeverDuplicates(t *testing.T) {
	a := newWith(t, mkPool("p", "10.0.0.0/20"))
	const workers, each = 8, 200
	results := make(chan Assignment, workers*each)
	errs := make(chan error, workers*each)
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				svc := "ns/w" + string(rune('a'+w)) + "-" + netip.AddrFrom4([4]byte{0, 0, byte(i >> 8), byte(i)}).String()
				as, err := a.Allocate(Request{Service: svc, Families: v4, Pools: []string{"p"}})
				if err != nil {
					errs <- err
					continue
				}
				results <- as
			}
		}()
	}
	for range workers {
		<-done
	}
	close(results)
	close(errs)
	for err := range errs {
		t.Errorf("Allocate: %v", err)
	}
	seen := map[netip.Addr]bool{}
	for as := range results {
		x := as.Addresses[0]
		if seen[x] {
			t.Fatalf("%v handed out twice", x)
		}
		seen[x] = true
	}
	// Concurrent callers still fill the pool from the bottom.
	for i := range workers * each {
		x := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if !seen[x] {
			t.Fatalf("%v not handed out, but %d addresses were", x, len(seen))
		}
	}
	if got := a.Stats("p").AssignedIPv4; got != workers*each {
		t.Errorf("Stats(p).AssignedIPv4 = %d, want %d", got, workers*each)
	}
}

// A controller restarting restores the statuses it finds in whatever order
// the cache lists them; the state afterwards must not depend on that order.
func TestRestoreOrderDoesNotMatter(t *testing.T) {
	pools := []Pool{avoiding(mkPool("p", "10.0.0.0/23")), mkPool("q", "2001:db8::/64")}
	type restore struct {
		req   Request
		addrs []netip.Addr
	}
	var rs []restore
	for i := range 300 {
		x := netip.AddrFrom4([4]byte{10, 0, byte(i * 7 % 512 >> 8), byte(i * 7 % 512)})
		if i%3 == 0 {
			x = netip.MustParseAddr("2001:db8::").Next()
			for range i {
				x = x.Next()
			}
		}
		rs = append(rs, restore{Request{Service: "ns/" + x.String(), Families: []Family{FamilyOf(x)}}, []netip.Addr{x}})
	}
	state := func(order []int) (map[string]Assignment, []Assignment) {
		a := newWith(t, pools...)
		for _, i := range order {
			// Addresses ending in .0/.255 are not in p: those restores fail
			// identically in every order.
			_, _ = a.Assign(rs[i].req, rs[i].addrs)
		}
		held := map[string]Assignment{}
		for _, r := range rs {
			if as, ok := a.Assigned(r.req.Service); ok {
				held[r.req.Service] = as
			}
		}
		var next []Assignment
		for i := range 50 {
			as, err := a.Allocate(Request{Service: "new/" + string(rune('a'+i)), Families: dual, Pools: []string{"p", "q"}})
			if err != nil {
				t.Fatal(err)
			}
			next = append(next, as)
		}
		return held, next
	}
	order := make([]int, len(rs))
	for i := range order {
		order[i] = i
	}
	wantHeld, wantNext := state(order)
	if len(wantHeld) < 250 {
		t.Fatalf("only %d of %d restores succeeded", len(wantHeld), len(rs))
	}
	r := rand.New(rand.NewPCG(3, 3))
	for range 5 {
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		held, next := state(order)
		if diff := cmp.Diff(wantHeld, held, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Fatalf("restored state depends on order (-in order +shuffled):\n%s", diff)
		}
		if diff := cmp.Diff(wantNext, next, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Fatalf("next allocations depend on restore order (-in order +shuffled):\n%s", diff)
		}
	}
}

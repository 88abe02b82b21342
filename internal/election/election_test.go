package election

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWinnerPinned pins the hash: a release that changed it would move
// addresses between nodes while old and new speakers run side by side, and
// the two versions would both claim (or both drop) the same address.
func TestWinnerPinned(t *testing.T) {
	nodes := []string{"node-a", "node-b", "node-c"}
	tests := []struct {
		addr string
		want string
	}{
		{"172.25.254.100", "node-b"},
		{"172.25.254.101", "node-c"},
		{"172.25.254.102", "node-b"},
		{"172.25.254.103", "node-a"},
		{"fd00:254::100", "node-b"},
		{"fd00:254::101", "node-b"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			got, ok := Winner(netip.MustParseAddr(tc.addr), nodes)
			if !ok || got != tc.want {
				t.Errorf("Winner(%s, %v) = %q, %v, want %q, true", tc.addr, nodes, got, ok, tc.want)
			}
		})
	}
}

func TestWinner(t *testing.T) {
	addr := netip.MustParseAddr("172.25.254.100")
	tests := []struct {
		name       string
		addr       netip.Addr
		candidates []string
		want       string
		wantOK     bool
	}{
		{name: "no candidates", addr: addr, candidates: nil, want: "", wantOK: false},
		{name: "one candidate", addr: addr, candidates: []string{"node-a"}, want: "node-a", wantOK: true},
		{name: "duplicates count once", addr: addr, candidates: []string{"node-a", "node-a"}, want: "node-a", wantOK: true},
		{
			name:       "IPv4-mapped form elects like IPv4",
			addr:       netip.MustParseAddr("::ffff:172.25.254.100"),
			candidates: []string{"node-a", "node-b", "node-c"},
			want:       mustWinner(t, addr, []string{"node-a", "node-b", "node-c"}),
			wantOK:     true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Winner(tc.addr, tc.candidates)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Winner(%v, %v) = %q, %v, want %q, %v", tc.addr, tc.candidates, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func mustWinner(t *testing.T, addr netip.Addr, nodes []string) string {
	t.Helper()
	w, ok := Winner(addr, nodes)
	if !ok {
		t.Fatalf("Winner(%v, %v) found no winner", addr, nodes)
	}
	return w
}

func TestWinnerIgnoresOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	nodes := nodeNames(7)
	for _, addr := range addresses(200) {
		want := mustWinner(t, addr, nodes)
		wantRanked := Ranked(addr, nodes)
		for range 5 {
			shuffled := slices.Clone(nodes)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got := mustWinner(t, addr, shuffled); got != want {
				t.Fatalf("Winner(%v, %v) = %q, want %q as for %v", addr, shuffled, got, want, nodes)
			}
			if diff := cmp.Diff(wantRanked, Ranked(addr, shuffled)); diff != "" {
				t.Fatalf("Ranked(%v, %v) mismatch (-want +got):\n%s", addr, shuffled, diff)
			}
		}
	}
}

func TestRanked(t *testing.T) {
	nodes := nodeNames(5)
	for _, addr := range addresses(100) {
		ranked := Ranked(addr, append(slices.Clone(nodes), nodes[0], nodes[3]))
		if len(ranked) != len(nodes) {
			t.Fatalf("Ranked(%v) = %v, want each of %v once", addr, ranked, nodes)
		}
		if w := mustWinner(t, addr, nodes); ranked[0] != w {
			t.Fatalf("Ranked(%v)[0] = %q, want winner %q", addr, ranked[0], w)
		}
		// The runner-up takes over when the owner goes.
		rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == ranked[0] })
		if w := mustWinner(t, addr, rest); w != ranked[1] {
			t.Fatalf("Winner(%v, %v) = %q, want runner-up %q", addr, rest, w, ranked[1])
		}
	}
}

// TestOnlyLeaverMoves is the property that makes failover cheap: when a node
// leaves, addresses owned by the others stay where they are.
func TestOnlyLeaverMoves(t *testing.T) {
	nodes := nodeNames(5)
	addrs := addresses(5000)
	for _, leaver := range nodes {
		t.Run(leaver, func(t *testing.T) {
			rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == leaver })
			moved := 0
			for _, addr := range addrs {
				before := mustWinner(t, addr, nodes)
				after := mustWinner(t, addr, rest)
				if before != leaver && after != before {
					t.Fatalf("%v moved from %q to %q when %q left", addr, before, after, leaver)
				}
				if before == leaver {
					moved++
				}
			}
			if moved == 0 {
				t.Fatalf("%q owned none of %d addresses, so the property was not exercised", leaver, len(addrs))
			}
			// And a node that joins takes addresses only for itself.
			for _, addr := range addrs {
				before := mustWinner(t, addr, rest)
				after := mustWinner(t, addr, nodes)
				if after != leaver && after != before {
					t.Fatalf("%v moved from %q to %q when %q joined", addr, before, after, leaver)
				}
			}
		})
	}
}

// TestDistribution checks that no node is starved or overloaded. With 10,000
// addresses over 5 nodes each share is 2,000 with a standard deviation of
// about 40; the bounds are 10 sigma wide, so the fixed input can only fail
// for a badly skewed hash.
func TestDistribution(t *testing.T) {
	for _, names := range [][]string{
		nodeNames(5),
		{"worker1", "worker2", "worker3", "worker4", "worker5"},
		{"a", "b", "c", "d", "e"},
	} {
		t.Run(fmt.Sprint(names), func(t *testing.T) {
			count := map[string]int{}
			addrs := append(addresses(5000), addresses6(5000)...)
			for _, addr := range addrs {
				count[mustWinner(t, addr, names)]++
			}
			want := len(addrs) / len(names)
			for _, n := range names {
				if c := count[n]; c < want-400 || c > want+400 {
					t.Errorf("node %q owns %d of %d addresses, want %d±400 (all: %v)", n, c, len(addrs), want, count)
				}
			}
		})
	}
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i+1)
	}
	return out
}

func addresses(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	a := netip.MustParseAddr("10.96.0.0")
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	return out
}

func addresses6(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	a := netip.MustParseAddr("fd00:254::1000")
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	return out
}

func BenchmarkWinner(b *testing.B) {
	for _, n := range []int{3, 10, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := nodeNames(n)
			addrs := addresses(1024)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				Winner(addrs[i%len(addrs)], nodes)
			}
		})
	}
}

func BenchmarkRanked(b *testing.B) {
	nodes := nodeNames(10)
	addrs := addresses(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Ranked(addrs[i%len(addrs)], nodes)
	}
}

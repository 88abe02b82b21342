package ipam

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// meter wraps the benchmark timer to also count process CPU time while the
// timer runs, reported as cpu-ns/op.
type meter struct {
	b     *testing.B
	since time.Duration
	total time.Duration
}

func startMeter(b *testing.B) *meter {
	b.ReportAllocs()
	b.ResetTimer()
	return &meter{b: b, since: processCPU()}
}

func (m *meter) stop() {
	m.b.StopTimer()
	m.total += processCPU() - m.since
}

func (m *meter) start() {
	m.since = processCPU()
	m.b.StartTimer()
}

func (m *meter) done() {
	m.stop()
	m.b.ReportMetric(float64(m.total.Nanoseconds())/float64(m.b.N), "cpu-ns/op")
}

func benchRequests(n int, fams []Family, requireAll bool) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{
			Service:    fmt.Sprintf("ns%d/svc%d", i%100, i),
			Families:   fams,
			RequireAll: requireAll,
			Pools:      []string{"p"},
			Ports:      []Port{tcp(80), tcp(443)},
		}
	}
	return reqs
}

// BenchmarkFill measures one allocation, averaged over filling an empty
// allocator up to n services (then starting again from empty, untimed). A
// flat allocator shows the same ns/op for every n.
func BenchmarkFill(b *testing.B) {
	cases := []struct {
		name string
		pool Pool
		fams []Family
		n    int
	}{
		{"IPv4-16/n=1000", mkPool("p", "10.0.0.0/16"), v4, 1000},
		{"IPv4-16/n=10000", mkPool("p", "10.0.0.0/16"), v4, 10000},
		{"IPv4-16/n=60000", mkPool("p", "10.0.0.0/16"), v4, 60000},
		{"IPv4-16-avoidBuggy/n=60000", avoiding(mkPool("p", "10.0.0.0/16")), v4, 60000},
		{"IPv4-12/n=100000", mkPool("p", "10.0.0.0/12"), v4, 100000},
		{"IPv6-64/n=1000", mkPool("p", "2001:db8::/64"), v6, 1000},
		{"IPv6-64/n=10000", mkPool("p", "2001:db8::/64"), v6, 10000},
		{"IPv6-64/n=100000", mkPool("p", "2001:db8::/64"), v6, 100000},
		{"dual-16-64/n=100000", mkPool("p", "10.0.0.0/12", "2001:db8::/64"), dual, 100000},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			reqs := benchRequests(tc.n, tc.fams, true)
			fresh := func() *Allocator {
				a := New()
				a.SetPools([]Pool{tc.pool})
				return a
			}
			a := fresh()
			j := 0
			m := startMeter(b)
			for range b.N {
				if j == tc.n {
					m.stop()
					a, j = fresh(), 0
					m.start()
				}
				if _, err := a.Allocate(reqs[j]); err != nil {
					b.Fatal(err)
				}
				j++
			}
			m.done()
		})
	}
}

// BenchmarkChurn measures releasing one random service and allocating a
// released one again, with n services held and 1% of them released at any
// time, so the pool is fragmented into about n/100 runs.
func BenchmarkChurn(b *testing.B) {
	cases := []struct {
		name string
		pool Pool
		fams []Family
		n    int
	}{
		{"IPv4-12/n=1000", mkPool("p", "10.0.0.0/12"), v4, 1000},
		{"IPv4-12/n=100000", mkPool("p", "10.0.0.0/12"), v4, 100000},
		{"IPv6-64/n=100000", mkPool("p", "2001:db8::/64"), v6, 100000},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			reqs := benchRequests(tc.n, tc.fams, true)
			a := New()
			a.SetPools([]Pool{tc.pool})
			for _, r := range reqs {
				if _, err := a.Allocate(r); err != nil {
					b.Fatal(err)
				}
			}
			r := rand.New(rand.NewPCG(1, 2))
			perm := r.Perm(tc.n) // perm[:free] are released
			free := tc.n / 100
			for _, i := range perm[:free] {
				a.Release(reqs[i].Service)
			}
			m := startMeter(b)
			for range b.N {
				// Release a random held service, then reallocate a random
				// released one.
				k := free + r.IntN(tc.n-free)
				a.Release(reqs[perm[k]].Service)
				perm[free], perm[k] = perm[k], perm[free]
				free++
				k = r.IntN(free)
				if _, err := a.Allocate(reqs[perm[k]]); err != nil {
					b.Fatal(err)
				}
				free--
				perm[free], perm[k] = perm[k], perm[free]
			}
			m.done()
		})
	}
}

// BenchmarkAllocateIdempotent measures a reconcile that finds the service
// already assigned: the common case of a controller resync.
func BenchmarkAllocateIdempotent(b *testing.B) {
	const n = 100000
	reqs := benchRequests(n, v4, true)
	a := New()
	a.SetPools([]Pool{mkPool("p", "10.0.0.0/12")})
	for _, r := range reqs {
		if _, err := a.Allocate(r); err != nil {
			b.Fatal(err)
		}
	}
	m := startMeter(b)
	for i := range b.N {
		if _, err := a.Allocate(reqs[i%n]); err != nil {
			b.Fatal(err)
		}
	}
	m.done()
}

// BenchmarkShared measures allocations that share addresses: groups of 10
// services with one key and distinct ports.
func BenchmarkShared(b *testing.B) {
	const n = 100000
	reqs := benchRequests(n, v4, true)
	for i := range reqs {
		reqs[i].SharingKey = fmt.Sprintf("key%d", i/10)
		reqs[i].Ports = []Port{tcp(int32(1000 + i%10))}
	}
	fresh := func() *Allocator {
		a := New()
		a.SetPools([]Pool{mkPool("p", "10.0.0.0/12")})
		return a
	}
	a := fresh()
	j := 0
	m := startMeter(b)
	for range b.N {
		if j == n {
			m.stop()
			a, j = fresh(), 0
			m.start()
		}
		if _, err := a.Allocate(reqs[j]); err != nil {
			b.Fatal(err)
		}
		j++
	}
	m.done()
}

// BenchmarkSetPools measures a configuration change with 100,000 services
// held: adding an unrelated pool, and changing the pool they live in.
func BenchmarkSetPools(b *testing.B) {
	const n = 100000
	reqs := benchRequests(n, v4, true)
	base := mkPool("p", "10.0.0.0/12")
	a := New()
	a.SetPools([]Pool{base})
	for _, r := range reqs {
		if _, err := a.Allocate(r); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("add-pool", func(b *testing.B) {
		m := startMeter(b)
		for i := range b.N {
			a.SetPools([]Pool{base, mkPool(fmt.Sprintf("x%d", i%2), "10.200.0.0/16")})
		}
		m.done()
	})
	b.Run("change-pool", func(b *testing.B) {
		m := startMeter(b)
		for i := range b.N {
			p := base
			if i%2 == 0 {
				p = mkPool("p", "10.0.0.0/12", "10.200.0.0/16")
			}
			a.SetPools([]Pool{p})
		}
		m.done()
	})
}

package bgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkAnnounceToPeer measures SyncPaths (one address added) until the
// in-process peer's best-path table holds it, and removal until it is
// withdrawn there. Reports p50/p99 of both.
func BenchmarkAnnounceToPeer(b *testing.B) {
	ctx := context.Background()
	router := newTestRouter(b, lo2, 64600, map[netip.Addr]uint32{lo1: 64512})
	s, err := New(Config{RouterID: lo1, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Start(sctx) }()
	b.Cleanup(func() { cancel(); <-done })
	if err := s.SyncPeers(ctx, []PeerConfig{router.peerConfig("tor", 64512, lo1)}); err != nil {
		b.Fatal(err)
	}
	eventually(b, sessionTimeout, "session established", func() string {
		if !router.sessionUp(b, lo1) {
			return "not established"
		}
		return ""
	})

	type event struct {
		pfx      netip.Prefix
		withdraw bool
	}
	events := make(chan event, 1024)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if err := router.watchBest(wctx, func(pfx netip.Prefix, withdraw bool) { events <- event{pfx, withdraw} }); err != nil {
		b.Fatal(err)
	}
	await := func(want event) {
		timeout := time.After(sessionTimeout)
		for {
			select {
			case ev := <-events:
				if ev == want {
					return
				}
			case <-timeout:
				b.Fatalf("router did not see %+v within %v", want, sessionTimeout)
			}
		}
	}

	var announce, withdraw []time.Duration
	base := netip.MustParseAddr("198.18.0.0")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pfx := netip.PrefixFrom(base, 32)
		base = base.Next()
		t0 := time.Now()
		if err := s.SyncPaths(ctx, []Path{{Prefix: pfx}}); err != nil {
			b.Fatal(err)
		}
		await(event{pfx, false})
		announce = append(announce, time.Since(t0))
		t0 = time.Now()
		if err := s.SyncPaths(ctx, nil); err != nil {
			b.Fatal(err)
		}
		await(event{pfx, true})
		withdraw = append(withdraw, time.Since(t0))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"_p50_ms")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, name+"_p99_ms")
	}
	report("announce", announce)
	report("withdraw", withdraw)
}

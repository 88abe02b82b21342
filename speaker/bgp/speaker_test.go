package bgp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

const sessionTimeout = 30 * time.Second

var (
	lo1 = netip.MustParseAddr("127.0.0.1")
	lo2 = netip.MustParseAddr("127.0.0.2")
	lo3 = netip.MustParseAddr("127.0.0.3")
)

// runSpeaker starts a speaker and returns a stop function that ends Start
// and waits for it.
func runSpeaker(t *testing.T, routerID netip.Addr) (*Speaker, func() error) {
	t.Helper()
	s, err := New(Config{RouterID: routerID, Logger: testLogger(t).WithName("speaker")})
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(sessionTimeout):
			t.Fatalf("Start did not return %v after its context ended", sessionTimeout)
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return s, stop
}

func TestAdvertiseWithdrawAndStop(t *testing.T) {
	ctx := context.Background()
	// iBGP, so the router sees local preference.
	router := newTestRouter(t, lo2, 64512, map[netip.Addr]uint32{lo1: 64512})
	s, stop := runSpeaker(t, lo1)
	if err := s.SyncPeers(ctx, []PeerConfig{router.peerConfig("tor", 64512, lo1)}); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	eventually(t, sessionTimeout, "session established", func() string {
		if !router.sessionUp(t, lo1) {
			return "router session with speaker is not established"
		}
		return ""
	})

	vip := netip.MustParsePrefix("172.25.254.50/32")
	other := netip.MustParsePrefix("198.51.100.0/24")
	err := s.SyncPaths(ctx, []Path{
		{Prefix: vip, LocalPref: 150, Communities: []uint32{65000<<16 | 100, 65000<<16 | 200}, LargeCommunities: [][3]uint32{{64512, 1, 2}}},
		{Prefix: other},
	})
	if err != nil {
		t.Fatalf("SyncPaths() = %v", err)
	}
	eventually(t, sessionTimeout, "paths at router", wantRoutes(t, router, map[netip.Prefix][]route{
		vip:   {{NextHop: lo1, LocalPref: 150, Communities: []uint32{65000<<16 | 100, 65000<<16 | 200}, LargeCommunities: [][3]uint32{{64512, 1, 2}}}},
		other: {{NextHop: lo1, LocalPref: 100}},
	}))

	states, err := s.PeerStates(ctx)
	if err != nil {
		t.Fatalf("PeerStates() = %v", err)
	}
	// The updates that carried the two paths were counted; how many
	// updates that took is the server's business.
	for i := range states {
		if states[i].UpdatesSent == 0 {
			t.Errorf("PeerStates(): %s sent no updates, yet the router has its paths", states[i].Name)
		}
		states[i].UpdatesSent = 0
	}
	if diff := cmp.Diff([]PeerState{{Name: "tor", Address: lo2, Up: true, State: "established", Advertised: 2}}, states, cmpOpts...); diff != "" {
		t.Errorf("PeerStates() mismatch (-want +got):\n%s", diff)
	}

	// Dropping a path from the desired state withdraws it.
	if err := s.SyncPaths(ctx, []Path{{Prefix: other}}); err != nil {
		t.Fatalf("SyncPaths() = %v", err)
	}
	eventually(t, sessionTimeout, "withdrawal at router", wantRoutes(t, router, map[netip.Prefix][]route{
		other: {{NextHop: lo1, LocalPref: 100}},
	}))

	// A clean stop withdraws everything before Start returns.
	if err := stop(); err != nil {
		t.Fatalf("Start() = %v after its context ended", err)
	}
	eventually(t, 5*time.Second, "withdrawal on stop", wantRoutes(t, router, map[netip.Prefix][]route{}))
}

func TestEBGPDropsLocalPrefAndKeepsNoMarkers(t *testing.T) {
	ctx := context.Background()
	router := newTestRouter(t, lo2, 64600, map[netip.Addr]uint32{lo1: 64512})
	s, _ := runSpeaker(t, lo1)
	if err := s.SyncPeers(ctx, []PeerConfig{router.peerConfig("tor", 64512, lo1)}); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	vip := netip.MustParsePrefix("172.25.254.51/32")
	if err := s.SyncPaths(ctx, []Path{{Prefix: vip, LocalPref: 150}}); err != nil {
		t.Fatalf("SyncPaths() = %v", err)
	}
	// No local preference over eBGP, and the targeting markers never leave.
	eventually(t, sessionTimeout, "path at router", wantRoutes(t, router, map[netip.Prefix][]route{
		vip: {{NextHop: lo1}},
	}))
}

func TestPeerTargeting(t *testing.T) {
	ctx := context.Background()
	r1 := newTestRouter(t, lo2, 64600, map[netip.Addr]uint32{lo1: 64512})
	r2 := newTestRouter(t, lo3, 64601, map[netip.Addr]uint32{lo1: 64512})
	s, _ := runSpeaker(t, lo1)
	peers := []PeerConfig{r1.peerConfig("r1", 64512, lo1), r2.peerConfig("r2", 64512, lo1)}
	if err := s.SyncPeers(ctx, peers); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	a := netip.MustParsePrefix("172.25.254.60/32")
	b := netip.MustParsePrefix("172.25.254.61/32")
	c := netip.MustParsePrefix("172.25.254.62/32")
	nh := []route{{NextHop: lo1}}

	steps := []struct {
		name   string
		peers  []PeerConfig
		paths  []Path
		r1, r2 map[netip.Prefix][]route
	}{{
		name:  "each prefix to its peers",
		peers: peers,
		paths: []Path{{Prefix: a, Peers: []string{"r1"}}, {Prefix: b}, {Prefix: c, Peers: []string{"r2", "not-configured"}}},
		r1:    map[netip.Prefix][]route{a: nh, b: nh},
		r2:    map[netip.Prefix][]route{b: nh, c: nh},
	}, {
		name:  "a moves from r1 to r2",
		peers: peers,
		paths: []Path{{Prefix: a, Peers: []string{"r2"}}, {Prefix: b}, {Prefix: c, Peers: []string{"r2"}}},
		r1:    map[netip.Prefix][]route{b: nh},
		r2:    map[netip.Prefix][]route{a: nh, b: nh, c: nh},
	}, {
		name:  "r2 removed",
		peers: peers[:1],
		paths: []Path{{Prefix: a, Peers: []string{"r2"}}, {Prefix: b}, {Prefix: c, Peers: []string{"r2"}}},
		r1:    map[netip.Prefix][]route{b: nh},
		r2:    map[netip.Prefix][]route{},
	}, {
		name:  "r2 back: paths naming it follow",
		peers: peers,
		paths: []Path{{Prefix: a, Peers: []string{"r2"}}, {Prefix: b}, {Prefix: c, Peers: []string{"r2"}}},
		r1:    map[netip.Prefix][]route{b: nh},
		r2:    map[netip.Prefix][]route{a: nh, b: nh, c: nh},
	}}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.SyncPeers(ctx, st.peers); err != nil {
				t.Fatalf("SyncPeers() = %v", err)
			}
			if err := s.SyncPaths(ctx, st.paths); err != nil {
				t.Fatalf("SyncPaths() = %v", err)
			}
			eventually(t, sessionTimeout, "routes at r1", wantRoutes(t, r1, st.r1))
			eventually(t, sessionTimeout, "routes at r2", wantRoutes(t, r2, st.r2))
		})
	}
}

func TestIPv6Session(t *testing.T) {
	ctx := context.Background()
	lo6 := netip.IPv6Loopback()
	router := newTestRouter(t, lo6, 64600, map[netip.Addr]uint32{lo6: 64512})
	s, _ := runSpeaker(t, lo1)
	if err := s.SyncPeers(ctx, []PeerConfig{router.peerConfig("tor6", 64512, lo6)}); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	v6 := netip.MustParsePrefix("fd00:254::50/128")
	v4 := netip.MustParsePrefix("172.25.254.52/32")
	if err := s.SyncPaths(ctx, []Path{{Prefix: v6, Communities: []uint32{65000<<16 | 6}}, {Prefix: v4}}); err != nil {
		t.Fatalf("SyncPaths() = %v", err)
	}
	// Without dualStack the IPv6 session carries the IPv6 path only.
	eventually(t, sessionTimeout, "IPv6 path at router", wantRoutes(t, router, map[netip.Prefix][]route{
		v6: {{NextHop: lo6, Communities: []uint32{65000<<16 | 6}}},
	}))

	// With dualStack the IPv4 path goes too, with the configured next hop.
	dual := router.peerConfig("tor6", 64512, lo6)
	nh4 := netip.MustParseAddr("172.25.254.11")
	dual.DualStack, dual.NextHopIPv4 = true, nh4
	if err := s.SyncPeers(ctx, []PeerConfig{dual}); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	eventually(t, sessionTimeout, "both families at router", wantRoutes(t, router, map[netip.Prefix][]route{
		v6: {{NextHop: lo6, Communities: []uint32{65000<<16 | 6}}},
		v4: {{NextHop: nh4}},
	}))
}

func TestPasswordMismatchKeepsSessionDown(t *testing.T) {
	requireTCPMD5(t)
	ctx := context.Background()
	router := newTestRouter(t, lo2, 64600, nil)
	router.addNeighbour(t, lo1, 64512, "right")
	router.addNeighbour(t, lo3, 64512, "right")
	good, _ := runSpeaker(t, lo1)
	bad, _ := runSpeaker(t, lo3)
	goodPeer := router.peerConfig("tor", 64512, lo1)
	goodPeer.Password = "right"
	badPeer := router.peerConfig("tor", 64512, lo3)
	badPeer.Password = "wrong"
	if err := bad.SyncPeers(ctx, []PeerConfig{badPeer}); err != nil {
		t.Fatalf("SyncPeers(bad) = %v", err)
	}
	if err := good.SyncPeers(ctx, []PeerConfig{goodPeer}); err != nil {
		t.Fatalf("SyncPeers(good) = %v", err)
	}
	// The speaker with the right password proves MD5 works and gives the
	// other one time to try; the wrong one must then still be down and say
	// why.
	eventually(t, sessionTimeout, "session with the right password", func() string {
		if !router.sessionUp(t, lo1) {
			return "not established"
		}
		return ""
	})
	eventually(t, sessionTimeout, "failure reported for the wrong password", func() string {
		st, err := bad.PeerStates(ctx)
		if err != nil {
			return err.Error()
		}
		if len(st) != 1 || st[0].LastError == "" {
			return cmp.Diff([]PeerState{{Name: "tor", Address: lo2, State: "active", LastError: "<some error>"}}, st, cmpOpts...)
		}
		return ""
	})
	if router.sessionUp(t, lo3) {
		t.Errorf("session with the wrong MD5 password is established")
	}
	st, _ := bad.PeerStates(ctx)
	if strings.Contains(st[0].LastError, "wrong") || strings.Contains(st[0].LastError, "right") {
		t.Errorf("LastError %q reveals the password", st[0].LastError)
	}
}

func TestSyncPeersRejectsWhatCannotBeHonoured(t *testing.T) {
	ctx := context.Background()
	rid := netip.MustParseAddr("172.25.254.11")
	ok := PeerConfig{Name: "tor", Address: netip.MustParseAddr("172.25.254.1"), MyASN: 64512, PeerASN: 64500}
	with := func(f func(*PeerConfig)) PeerConfig {
		p := ok
		p.Name = "bad"
		f(&p)
		return p
	}
	tests := []struct {
		name     string
		peer     PeerConfig
		sentinel error
		field    string
	}{
		{"per-peer router id", with(func(p *PeerConfig) { p.RouterID = netip.MustParseAddr("10.0.0.9") }), ErrUnsupported, "routerID"},
		{"sub-second hold time", with(func(p *PeerConfig) { p.HoldTime = 1500 * time.Millisecond }), ErrUnsupported, "holdTime"},
		{"hold time below 3s", with(func(p *PeerConfig) { p.HoldTime = 2 * time.Second }), ErrInvalid, "holdTime"},
		{"keepalive above hold", with(func(p *PeerConfig) { p.HoldTime, p.KeepaliveTime = 9*time.Second, 10*time.Second }), ErrInvalid, "keepaliveTime"},
		{"sub-second connect time", with(func(p *PeerConfig) { p.ConnectTime = 100 * time.Millisecond }), ErrUnsupported, "connectTime"},
		{"zoned address", with(func(p *PeerConfig) { p.Address = netip.MustParseAddr("fe80::1%eth0") }), ErrUnsupported, "address"},
		{"both peer and dynamic ASN", with(func(p *PeerConfig) { p.DynamicASN = DynamicASNExternal }), ErrInvalid, "dynamicASN"},
		{"unknown dynamic ASN", with(func(p *PeerConfig) { p.PeerASN, p.DynamicASN = 0, "sometimes" }), ErrInvalid, "dynamicASN"},
		{"no peer ASN", with(func(p *PeerConfig) { p.PeerASN = 0 }), ErrInvalid, "peerASN"},
		{"source of the other family", with(func(p *PeerConfig) { p.SourceAddress = netip.MustParseAddr("fd00:254::11") }), ErrInvalid, "sourceAddress"},
		{"dual stack without IPv6 next hop", with(func(p *PeerConfig) { p.DualStack = true }), ErrInvalid, "dualStack"},
		{"duplicate address", with(func(p *PeerConfig) {}), ErrInvalid, "address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{RouterID: rid})
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			err = s.SyncPeers(ctx, []PeerConfig{ok, tc.peer})
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("SyncPeers() = %v, want %v", err, tc.sentinel)
			}
			if msg := err.Error(); !strings.Contains(msg, `peer "bad": `+tc.field+":") {
				t.Errorf("SyncPeers() = %q, want it to name peer %q and field %q", msg, "bad", tc.field)
			}
			// The valid peer is kept; the rejected one is reported.
			states, err := s.PeerStates(ctx)
			if err != nil {
				t.Fatalf("PeerStates() = %v", err)
			}
			var got []string
			for _, st := range states {
				got = append(got, st.Name+"/"+st.State)
			}
			if diff := cmp.Diff([]string{"bad/unconfigured", "tor/idle"}, got, cmpOpts...); diff != "" {
				t.Errorf("PeerStates() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDesiredAdverts(t *testing.T) {
	p1 := netip.MustParsePrefix("172.25.254.50/32")
	p2 := netip.MustParsePrefix("172.25.254.64/26")
	peers := map[string]PeerConfig{"r1": {}, "r2": {}}
	markers := map[string]uint32{"r1": 1, "r2": 2}
	tests := []struct {
		name         string
		paths        []Path
		want         map[netip.Prefix]advert
		wantConflict bool
	}{{
		name:  "empty peers means all",
		paths: []Path{{Prefix: p1}},
		want:  map[netip.Prefix]advert{p1: {peers: []string{"r1", "r2"}, markers: []uint32{1, 2}}},
	}, {
		name:  "unknown peers are left out, prefix with none is not advertised",
		paths: []Path{{Prefix: p1, Peers: []string{"r2", "gone"}}, {Prefix: p2, Peers: []string{"gone"}}},
		want:  map[netip.Prefix]advert{p1: {peers: []string{"r2"}, markers: []uint32{2}}},
	}, {
		name: "same attributes for two peers merge without conflict",
		paths: []Path{
			{Prefix: p1, Communities: []uint32{2, 1}, Peers: []string{"r1"}},
			{Prefix: p1, Communities: []uint32{1, 2, 2}, Peers: []string{"r2"}},
		},
		want: map[netip.Prefix]advert{p1: {communities: []uint32{1, 2}, peers: []string{"r1", "r2"}, markers: []uint32{1, 2}}},
	}, {
		name: "host bits are masked",
		paths: []Path{
			{Prefix: netip.MustParsePrefix("172.25.254.70/26"), LargeCommunities: [][3]uint32{{3, 2, 1}, {1, 2, 3}}},
		},
		want: map[netip.Prefix]advert{p2: {large: [][3]uint32{{1, 2, 3}, {3, 2, 1}}, peers: []string{"r1", "r2"}, markers: []uint32{1, 2}}},
	}, {
		name: "different attributes merge and are reported",
		paths: []Path{
			{Prefix: p1, LocalPref: 100, Communities: []uint32{1}, Peers: []string{"r1"}},
			{Prefix: p1, LocalPref: 200, Communities: []uint32{2}, Peers: []string{"r2"}},
		},
		want:         map[netip.Prefix]advert{p1: {localPref: 200, communities: []uint32{1, 2}, peers: []string{"r1", "r2"}, markers: []uint32{1, 2}}},
		wantConflict: true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := desiredAdverts(tc.paths, peers, markers)
			if errors.Is(err, ErrConflictingAttributes) != tc.wantConflict {
				t.Errorf("desiredAdverts() error = %v, want conflict %v", err, tc.wantConflict)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(advert{})); diff != "" {
				t.Errorf("desiredAdverts() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// requireTCPMD5 skips when the kernel refuses TCP MD5 signatures on a
// listening socket (ENOPROTOOPT), as kernels built without TCP_MD5SIG do.
// The probe is a plain TCP listener, as gobgp's are: since Go 1.24
// net.Listen opens MPTCP listeners, which refuse TCP MD5 whatever the
// kernel, and would make this test skip everywhere.
func requireTCPMD5(t *testing.T) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp", netip.AddrPortFrom(lo2, 0).String())
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	sc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatalf("listener syscall conn: %v", err)
	}
	var serr error
	_ = sc.Control(func(fd uintptr) {
		sig := unix.TCPMD5Sig{Keylen: 4}
		sig.Addr.Family = unix.AF_INET
		copy(sig.Addr.Data[2:], lo1.AsSlice())
		copy(sig.Key[:], "test")
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	})
	if errors.Is(serr, unix.ENOPROTOOPT) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kernel refuses TCP MD5 signatures on a plain TCP listener (ENOPROTOOPT); CI needs a kernel with TCP_MD5SIG")
		}
		t.Skip("kernel refuses TCP MD5 signatures on a plain TCP listener (ENOPROTOOPT): it is built without TCP_MD5SIG")
	}
	if serr != nil {
		t.Fatalf("set TCP MD5 signature on a plain TCP listener: %v", serr)
	}
}

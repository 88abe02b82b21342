package bgp

// A plain gobgp server standing in for a top-of-rack router, for the
// in-process tests. Only tests import gobgp's API outside gobgpapi.go.

import (
	"context"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// route is what a router holds for one prefix, as a user would inspect it.
type route struct {
	NextHop          netip.Addr
	LocalPref        uint32 // 0 when absent (eBGP)
	Communities      []uint32
	LargeCommunities [][3]uint32
}

type testRouter struct {
	srv  *server.BgpServer
	addr netip.Addr
	port uint16
	asn  uint32
}

// freePort asks the OS for a free TCP port on addr.
func freePort(t testing.TB, addr netip.Addr) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("find free port on %v: %v", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// newTestRouter listens on addr at a free port and accepts sessions from
// the given neighbours (passively, with their ASN).
func newTestRouter(t testing.TB, addr netip.Addr, asn uint32, neighbours map[netip.Addr]uint32) *testRouter {
	t.Helper()
	ctx := context.Background()
	r := &testRouter{srv: server.NewBgpServer(server.LoggerOption(newServerLogger(testLogger(t).WithName("router"), nil), nil)), addr: addr, asn: asn}
	go r.srv.Serve()
	r.port = freePort(t, addr)
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "10.255.255.1", ListenPort: int32(r.port), ListenAddresses: []string{addr.String()},
		UseMultiplePaths: true,
	}}); err != nil {
		t.Fatalf("start test router: %v", err)
	}
	t.Cleanup(r.srv.Stop)
	for n, nasn := range neighbours {
		r.addNeighbour(t, n, nasn, "")
	}
	return r
}

func (r *testRouter) addNeighbour(t testing.TB, n netip.Addr, asn uint32, password string) {
	t.Helper()
	afs := []*api.AfiSafi{
		{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
	}
	if err := r.srv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: n.String(), PeerAsn: asn, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: r.addr.String()},
		AfiSafis:  afs,
	}}); err != nil {
		t.Fatalf("add neighbour %v to test router: %v", n, err)
	}
}

// peerConfig is how a speaker reaches this router.
func (r *testRouter) peerConfig(name string, myASN uint32, source netip.Addr) PeerConfig {
	return PeerConfig{
		Name: name, Address: r.addr, Port: r.port, MyASN: myASN, PeerASN: r.asn,
		SourceAddress: source, ConnectTime: time.Second,
	}
}

// routes lists the router's table for both families.
func (r *testRouter) routes(t testing.TB) map[netip.Prefix][]route {
	t.Helper()
	out := map[netip.Prefix][]route{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
			pfx := netip.MustParsePrefix(nlri.String())
			for _, p := range paths {
				out[pfx] = append(out[pfx], decodeRoute(p))
			}
			slices.SortFunc(out[pfx], func(a, b route) int { return a.NextHop.Compare(b.NextHop) })
		})
		if err != nil {
			t.Fatalf("list test router paths: %v", err)
		}
	}
	return out
}

func decodeRoute(p *apiutil.Path) route {
	var rt route
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			rt.NextHop = a.Value.Unmap()
		case *bgp.PathAttributeMpReachNLRI:
			rt.NextHop = a.Nexthop
		case *bgp.PathAttributeLocalPref:
			rt.LocalPref = a.Value
		case *bgp.PathAttributeCommunities:
			rt.Communities = a.Value
		case *bgp.PathAttributeLargeCommunities:
			for _, c := range a.Values {
				rt.LargeCommunities = append(rt.LargeCommunities, [3]uint32{c.ASN, c.LocalData1, c.LocalData2})
			}
		}
	}
	return rt
}

// sessionUp reports whether the router's session with n is Established.
func (r *testRouter) sessionUp(t testing.TB, n netip.Addr) bool {
	t.Helper()
	up := false
	err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{Address: n.String()}, func(p *api.Peer) {
		up = p.State != nil && p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
	})
	if err != nil {
		t.Fatalf("list test router peers: %v", err)
	}
	return up
}

// watchBest calls fn for every best-path change the router sees.
func (r *testRouter) watchBest(ctx context.Context, fn func(pfx netip.Prefix, withdraw bool)) error {
	return r.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnBestPath: func(paths []*apiutil.Path, _ time.Time) {
			for _, p := range paths {
				if pfx, err := netip.ParsePrefix(p.Nlri.String()); err == nil {
					fn(pfx, p.Withdrawal)
				}
			}
		},
	}, server.WatchBestPath(false))
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if last = cond(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %v: %s", what, timeout, last)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func wantRoutes(t testing.TB, r *testRouter, want map[netip.Prefix][]route) func() string {
	return func() string {
		return cmp.Diff(want, r.routes(t), cmpOpts...)
	}
}

// testLogger discards unless IRONLB_TEST_LOG is set: the servers' goroutines
// outlive a test, so t.Log cannot be used.
func testLogger(testing.TB) logr.Logger {
	if os.Getenv("IRONLB_TEST_LOG") == "" {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 2})
}

var cmpOpts = []cmp.Option{cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

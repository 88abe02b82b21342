package e2e

// BGP mode against real FRR: zebra and bgpd run in the lab's router
// namespace and peer with the speakers on the nodes.

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	frrstate "github.com/ironlb/ironlb/e2e/frr"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/e2e/manifests"
)

// startFRR configures and starts FRR on the lab router with every node as
// an eBGP neighbour and ECMP over them. Without FRR it fails under CI and
// skips elsewhere (frr.Require).
func startFRR(t *testing.T, l *lab.Lab) *frrstate.Router {
	t.Helper()
	return startFRRWith(t, l, frrOptions{})
}

// frrOptions vary the lab router's BGP set-up.
type frrOptions struct {
	// asn is the router's ASN: manifests.RouterASN (eBGP with the nodes)
	// when 0, manifests.NodeASN for iBGP, where local preference is
	// carried.
	asn uint32
	// ipv6 adds a session with each node's IPv6 address for IPv6 routes.
	ipv6 bool
	// passwords turn on TCP MD5 for the sessions with these node addresses.
	passwords map[netip.Addr]string
}

// startFRRWith is startFRR with the options: ECMP over the nodes for each
// family, every connect retry after a second.
func startFRRWith(t *testing.T, l *lab.Lab, o frrOptions) *frrstate.Router {
	t.Helper()
	frrstate.Require(t)
	cfg := frrstate.LabConfig(l, cmp.Or(o.asn, manifests.RouterASN), manifests.NodeASN, o.ipv6)
	cfg.Passwords = o.passwords
	return frrstate.StartLab(t, l, cfg)
}

// apply writes manifest to a file named name and applies it with kubectl,
// as a user would.
func (c *labCluster) apply(t *testing.T, name, manifest string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	c.kubectl(t, "apply", "-f", path)
}

// waitNextHops waits until the router routes prefix over the next hops
// want (sorted), else fails the test showing the router's sessions.
func waitNextHops(t *testing.T, f *frrstate.Router, prefix netip.Prefix, want []string) {
	t.Helper()
	out, ok := waitFor(2*time.Minute, func() (string, bool) {
		hops, err := f.NextHops(prefix)
		if err != nil {
			return err.Error(), false
		}
		return fmt.Sprintf("next hops %v", hops), slices.Equal(hops, want)
	})
	if !ok {
		summary, _ := f.Vtysh("show bgp summary")
		t.Fatalf("want next hops %v for %s at the router, last: %s\n%s", want, prefix, out, summary)
	}
}

// TestLabBGP: with a BGPPeer and a BGPAdvertisement for the first pool,
// every node's speaker advertises the example Service's address to FRR,
// which routes it over the three nodes (ECMP); curl from the client through
// the router reaches the backends; a speaker that stops cleanly withdraws
// its route at once.
func TestLabBGP(t *testing.T) {
	c := startLabCluster(t)
	f := startFRR(t, c.Lab)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	c.apply(t, "bgp.yaml", manifests.BGPFirstPool())
	c.deployExampleService(t)

	vip := netip.MustParseAddr("172.25.254.50")
	prefix := netip.PrefixFrom(vip, 32)
	speakers := map[string]*lab.Process{}
	var all []string
	started := time.Now()
	for _, n := range c.Nodes {
		speakers[n.Name] = startSpeaker(t, c.env.Kubeconfig, n)
		all = append(all, n.IPv4.String())
	}
	slices.Sort(all)
	waitNextHops(t, f, prefix, all)
	t.Logf("bgp-first-route ms=%.0f (speakers started to %d next hops at FRR, session set-up included)", ms(time.Since(started)), len(all))

	// The client's own segment holds the address, so it would ARP for it;
	// send it to the router instead, as a client beyond the router would.
	if out, err := c.Client.Exec(ctx, "ip", "route", "add", prefix.String(), "via", c.Router.IPv4.String()); err != nil {
		t.Fatalf("route %s via the router on the client: %v: %s", prefix, err, out)
	}
	pods := map[string]bool{}
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curl(ctx, c, vip)
		if err != nil {
			return err.Error(), false
		}
		pods[a.pod] = true
		return fmt.Sprintf("answered by %s via %s; pods so far %v", a.pod, forwardedBy(c, a.from), pods), true
	}); !ok {
		t.Fatalf("curl http://%s/ from the client through the router failed: %s", vip, out)
	} else {
		t.Log(out)
	}

	// A clean stop withdraws at once: the router drops that next hop while
	// the speaker still drains its forwarding, before it exits. The clock
	// runs from SIGTERM to the route change in the router's kernel table
	// (netlink), not to the exit, which waits for the drain.
	kernel, err := frrstate.WatchKernel(f.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer kernel.Close()
	gone := c.Nodes[0]
	rest := slices.DeleteFunc(slices.Clone(all), func(h string) bool { return h == gone.IPv4.String() })
	stopped := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- speakers[gone.Name].Stop(30 * time.Second) }()
	waitCtx, waitCancel := context.WithTimeout(ctx, time.Minute)
	defer waitCancel()
	withdrawn, err := kernel.Wait(waitCtx, prefix, func(hops []netip.Addr) bool {
		got := make([]string, len(hops))
		for i, h := range hops {
			got[i] = h.String()
		}
		return slices.Equal(got, rest)
	})
	if err != nil {
		t.Fatalf("next hops %v for %s at the router's kernel after stopping %s: %v", rest, prefix, gone.Name, err)
	}
	if err := <-exited; err != nil {
		t.Fatal(err)
	}
	took := withdrawn.Sub(stopped)
	if hold := 90 * time.Second; took >= hold {
		t.Errorf("next hop of stopped %s left after %v, not at once", gone.Name, took)
	}
	t.Logf("bgp-clean-stop-withdraw ms=%.0f exit_ms=%.0f (SIGTERM to %d next hops in the router's kernel table; to the speaker's exit)",
		ms(took), ms(time.Since(stopped)), len(rest))
	waitNextHops(t, f, prefix, rest)
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curl(ctx, c, vip)
		if err != nil {
			return err.Error(), false
		}
		return "answered by " + a.pod, true
	}); !ok {
		t.Errorf("curl after %s stopped: %s", gone.Name, out)
	}
}

package e2e

// BGP mode against real FRR: zebra and bgpd run in the lab's router
// namespace and peer with the speakers on the nodes.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	frrstate "github.com/ironlb/ironlb/e2e/frr"
	"github.com/ironlb/ironlb/e2e/lab"
)

const (
	labRouterASN = 64513
	labNodeASN   = 64512
)

// bgpConfig is what a user applies for BGP mode: the first pool, advertised
// by BGP to the router, with no L2Advertisement.
var bgpConfig = fmt.Sprintf(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
  - 172.25.254.50-172.25.254.99
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: tor
  namespace: metallb-system
spec:
  myASN: %d
  peerASN: %d
  peerAddress: 172.25.254.1
  connectTime: 1s
`, labNodeASN, labRouterASN)

// startFRR configures and starts FRR on the lab router with every node as
// an eBGP neighbour and ECMP over them. Skips when FRR is not installed.
func startFRR(t *testing.T, l *lab.Lab) *frrstate.Router {
	t.Helper()
	if err := frrstate.Installed(); err != nil {
		t.Skip(err)
	}
	var neighbours strings.Builder
	for _, n := range l.Nodes {
		fmt.Fprintf(&neighbours, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n", n.IPv4, labNodeASN, n.IPv4)
	}
	// The router forwards client traffic back out of the interface it came
	// in on; a redirect would send the client to a node directly.
	if out, err := l.Router.Exec(context.Background(), "sysctl", "-w", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"); err != nil {
		t.Fatalf("disable redirects on the router: %v: %s", err, out)
	}
	return frrstate.Start(t, l.Router.Namespace, func(dir string) string {
		return fmt.Sprintf(`hostname lab-router
log file %s/bgpd.log
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
%s address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
`, dir, labRouterASN, l.Router.IPv4, neighbours.String())
	})
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

	cfgPath := filepath.Join(t.TempDir(), "bgp.yaml")
	if err := os.WriteFile(cfgPath, []byte(bgpConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c.kubectl(t, "apply", "-f", cfgPath)
	c.deployExampleService(t)

	vip := netip.MustParseAddr("172.25.254.50")
	prefix := netip.PrefixFrom(vip, 32)
	waitHops := func(want []string) time.Duration {
		t.Helper()
		start := time.Now()
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
		return time.Since(start)
	}

	speakers := map[string]*lab.Process{}
	var all []string
	started := time.Now()
	for _, n := range c.Nodes {
		speakers[n.Name] = startSpeaker(t, c.env.Kubeconfig, n)
		all = append(all, n.IPv4.String())
	}
	slices.Sort(all)
	waitHops(all)
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

	// A clean stop withdraws before the speaker exits: the router drops
	// that next hop well before any hold time would expire.
	gone := c.Nodes[0]
	stopped := time.Now()
	if err := speakers[gone.Name].Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(slices.Clone(all), func(h string) bool { return h == gone.IPv4.String() })
	waitHops(rest)
	if hold := 90 * time.Second; time.Since(stopped) >= hold {
		t.Errorf("next hop of stopped %s left after %v, not at once", gone.Name, time.Since(stopped))
	}
	t.Logf("bgp-clean-stop-withdraw ms=%.0f (SIGTERM to %d next hops at FRR)", ms(time.Since(stopped)), len(rest))
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

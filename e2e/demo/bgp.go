package main

// The tour in BGP mode (`make demo-bgp`): FRR on the lab router peers with
// a speaker on every node; the router spreads the Service's traffic over
// the nodes (ECMP), and the client reaches it through the router.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ironlb/ironlb/e2e/frr"
	"github.com/ironlb/ironlb/e2e/manifests"
)

// bgpPoolManifest is 01-l2-first-pool.yaml's pool advertised by BGP: a
// BGPAdvertisement and a BGPPeer instead of the L2Advertisement.
var bgpPoolManifest = manifests.BGPFirstPool()

func (d *demo) bgpSteps() []step {
	return []step{
		{"Install missing tools", d.installTools},
		{"Get the Kubernetes control plane binaries", d.controlPlaneAssets},
		{"Build ironlb", d.build},
		{"Bring up the network lab", d.bringUpLab},
		{"Start FRR on the lab router, peering with every node", d.startRouter},
		{"Start the control plane and the ironlb controller", d.startCluster},
		{"Apply the address pool, the BGP advertisement and the BGP peer", d.applyBGPPool},
		{"Apply the Service and watch it get its address", d.applyService},
		{"Start a speaker on every node and watch the router's routes", d.startBGPSpeakers},
		{"curl the Service from the client, through the router", d.curlThroughRouter},
	}
}

func (d *demo) startRouter(ctx context.Context) error {
	if err := frr.Installed(); err != nil {
		return err
	}
	l := d.lab
	r, err := frr.LaunchLab(ctx, l, frr.LabConfig(l, manifests.RouterASN, manifests.NodeASN, false))
	if err != nil {
		return err
	}
	d.frr = r
	conf, err := os.ReadFile(filepath.Join(r.Dir, "bgpd.conf"))
	if err != nil {
		return err
	}
	d.command("cat bgpd.conf   # zebra and bgpd in "+l.Router.Namespace, string(conf))
	return nil
}

func (d *demo) vtysh(command string) (string, error) {
	out, err := d.frr.Vtysh(command)
	d.command(fmt.Sprintf("ip netns exec %s vtysh -c '%s'", d.frr.Namespace, command), string(out))
	if err != nil {
		return string(out), fmt.Errorf("vtysh -c %q: %w", command, err)
	}
	return string(out), nil
}

func (d *demo) applyBGPPool(ctx context.Context) error {
	path := filepath.Join(d.binDir, "bgp-first-pool.yaml")
	if err := os.WriteFile(path, []byte(bgpPoolManifest), 0o644); err != nil {
		return err
	}
	d.say("the first pool of 01-l2-first-pool.yaml, advertised by BGP to the router:")
	fmt.Fprint(d.out, indent(bgpPoolManifest))
	out, err := d.env.Kubectl("apply", "-f", path)
	d.command("kubectl apply -f bgp-first-pool.yaml", out)
	return err
}

func (d *demo) startBGPSpeakers(ctx context.Context) error {
	var want []string
	for _, n := range d.lab.Nodes {
		p, err := d.startSpeaker(n)
		if err != nil {
			return err
		}
		want = append(want, n.IPv4.String())
		d.say("$ ironlb speaker --node-name %s ...   (in %s's namespace; log %s)", n.Name, n.Name, p.LogPath)
	}
	slices.Sort(want)
	d.say("every node with a ready endpoint advertises %s to the router: no election in BGP mode", serviceAddr)
	pfx := netip.PrefixFrom(netip.MustParseAddr(serviceAddr), 32)
	start := time.Now()
	var hops []string
	for {
		var err error
		hops, err = d.frr.NextHops(pfx)
		if err == nil && slices.Equal(hops, want) {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("router's next hops for %s: %v (%v), want %v", pfx, hops, err, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.say("the router has %d next hops for %s, one per node, %s after the speakers started:", len(hops), pfx, roundDuration(time.Since(start)))
	if _, err := d.vtysh("show bgp summary"); err != nil {
		return err
	}
	if _, err := d.vtysh("show ip route " + pfx.String()); err != nil {
		return err
	}
	out, err := d.lab.Router.Exec(ctx, "ip", "route", "show", pfx.String())
	d.command(fmt.Sprintf("ip netns exec %s ip route show %s   # the router's kernel forwards by it", d.lab.Router.Namespace, pfx), out)
	if err != nil {
		return err
	}
	_, err = d.kubectl("get", "servicebgpstatuses", "-A")
	return err
}

func (d *demo) curlThroughRouter(ctx context.Context) error {
	c := d.lab.Client
	d.say("the client shares the nodes' segment, so it would ARP for %s, which no one answers in BGP mode;", serviceAddr)
	d.say("route it via the router, as a client beyond the router would be:")
	route := []string{"ip", "route", "add", serviceAddr + "/32", "via", d.lab.Router.IPv4.String()}
	out, err := c.Exec(ctx, route[0], route[1:]...)
	d.command(fmt.Sprintf("ip netns exec %s %s", c.Namespace, strings.Join(route, " ")), out)
	if err != nil {
		return err
	}
	nodes := map[string]bool{}
	pods := map[string]bool{}
	for i := 0; i < 6; i++ {
		out, err := d.curl(ctx)
		d.command(fmt.Sprintf("ip netns exec %s curl -s http://%s/", c.Namespace, serviceAddr), out)
		if err != nil {
			return err
		}
		if f := strings.Fields(out); len(f) == 2 {
			pods[f[0]] = true
			from, _, _ := strings.Cut(f[1], ":")
			nodes[d.nodeByAddr(from)] = true
		}
	}
	d.say("pods that answered: %d; nodes that forwarded: %d. The router picks a next hop per flow by hashing its addresses, so one client tends to stay on one node; that node's forwarder spreads the requests over the pods", len(pods), len(nodes))
	if len(pods) == 0 {
		return fmt.Errorf("no answer through the router")
	}
	return nil
}

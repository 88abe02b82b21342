package frr

import (
	"context"
	"fmt"
	"testing"

	"github.com/ironlb/ironlb/e2e/lab"
)

// LabConfig is the set-up of the lab router in AS asn peering with every
// node of l, in nodeASN, by its IPv4 address and, with ipv6, by its IPv6
// address too.
func LabConfig(l *lab.Lab, asn, nodeASN uint32, ipv6 bool) Config {
	c := Config{ASN: asn, NodeASN: nodeASN, RouterID: l.Router.IPv4}
	for _, n := range l.Nodes {
		c.Neighbours = append(c.Neighbours, n.IPv4)
		if ipv6 {
			c.Neighbours = append(c.Neighbours, n.IPv6)
		}
	}
	return c
}

// LaunchLab is Launch on the lab's router with c.
func LaunchLab(ctx context.Context, l *lab.Lab, c Config) (*Router, error) {
	if err := noRedirects(ctx, l.Router); err != nil {
		return nil, err
	}
	return Launch(l.Router.Namespace, c.BGPD(), c.BFDD())
}

// StartLab is Start on the lab's router with c.
func StartLab(t testing.TB, l *lab.Lab, c Config) *Router {
	t.Helper()
	if err := noRedirects(context.Background(), l.Router); err != nil {
		t.Fatal(err)
	}
	return Start(t, l.Router.Namespace, c.BGPD(), c.BFDD())
}

// noRedirects makes the router send client traffic back out of the
// interface it came in on; a redirect would send the client to a node
// directly.
func noRedirects(ctx context.Context, router *lab.Host) error {
	if out, err := router.Exec(ctx, "sysctl", "-w", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"); err != nil {
		return fmt.Errorf("disable redirects on the router: %w: %s", err, out)
	}
	return nil
}

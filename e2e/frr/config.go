package frr

import (
	"fmt"
	"net/netip"
	"strings"
)

// Config is the lab router's BGP set-up: one session per node address,
// ECMP over them, and every connect retry after a second.
type Config struct {
	// ASN is the router's; the nodes are in NodeASN. Equal ASNs make the
	// sessions iBGP, which carries local preference.
	ASN, NodeASN uint32
	RouterID     netip.Addr
	// Neighbours are the nodes' addresses. Each session carries the routes
	// of its own address's family only.
	Neighbours []netip.Addr
	// Passwords turn on TCP MD5 signatures for the sessions with these
	// neighbours.
	Passwords map[netip.Addr]string
	// IPv4OnAll activates IPv4 unicast on the IPv6 sessions too, as FRR
	// does by default.
	IPv4OnAll bool
	// BFD turns on single-hop BFD (bfdd) for every session; nil leaves it
	// off.
	BFD *BFD
}

// BFD is the router's BFD profile, in milliseconds.
type BFD struct {
	ReceiveMs, TransmitMs, Multiplier uint32
}

// bfdProfile is the profile's name in bfdd.conf and bgpd.conf.
const bfdProfile = "ironlb"

// BFDD returns the bfdd.conf of c for a router directory, or nil when c has
// no BFD.
func (c Config) BFDD() func(dir string) string {
	if c.BFD == nil {
		return nil
	}
	return func(dir string) string {
		return fmt.Sprintf(`hostname lab-router
log file %s/bfdd.log
bfd
 profile %s
  receive-interval %d
  transmit-interval %d
  detect-multiplier %d
 exit
exit
`, dir, bfdProfile, c.BFD.ReceiveMs, c.BFD.TransmitMs, c.BFD.Multiplier)
	}
}

// BGPD returns the bgpd.conf of c for a router directory, as Start and
// Launch want it.
func (c Config) BGPD() func(dir string) string {
	return func(dir string) string {
		maxPaths := "  maximum-paths 8\n"
		if c.ASN == c.NodeASN {
			maxPaths = "  maximum-paths ibgp 8\n"
		}
		var neighbours strings.Builder
		v4 := " address-family ipv4 unicast\n" + maxPaths
		v6 := " address-family ipv6 unicast\n" + maxPaths
		has6 := false
		for _, n := range c.Neighbours {
			fmt.Fprintf(&neighbours, " neighbor %s remote-as %d\n neighbor %s timers connect 1\n", n, c.NodeASN, n)
			if c.BFD != nil {
				fmt.Fprintf(&neighbours, " neighbor %s bfd\n neighbor %s bfd profile %s\n", n, n, bfdProfile)
			}
			if pw, ok := c.Passwords[n]; ok {
				fmt.Fprintf(&neighbours, " neighbor %s password %s\n", n, pw)
			}
			if n.Is4() {
				v4 += fmt.Sprintf("  neighbor %s activate\n", n)
			} else {
				v6 += fmt.Sprintf("  neighbor %s activate\n", n)
				has6 = true
			}
		}
		families := v4 + " exit-address-family\n"
		if has6 {
			families += v6 + " exit-address-family\n"
		}
		// FRR 8.4 needs the first two for eBGP routes without policies and
		// for ECMP over neighbours in different ASes; the third keeps each
		// family on its own sessions.
		settings := " no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n"
		if !c.IPv4OnAll {
			settings += " no bgp default ipv4-unicast\n"
		}
		return fmt.Sprintf(`hostname lab-router
log file %s/bgpd.log
router bgp %d
 bgp router-id %s
%s%s%s`, dir, c.ASN, c.RouterID, settings, neighbours.String(), families)
	}
}

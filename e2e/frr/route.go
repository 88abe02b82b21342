// Package frr reads the state of an FRR router for ironlb's tests.
package frr

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
)

// Vtysh runs one vtysh command against the FRR instance in network
// namespace ns whose vty sockets are in dir.
func Vtysh(ns, dir, command string) ([]byte, error) {
	return exec.Command("ip", "netns", "exec", ns, "vtysh", "--vty_socket", dir, "-c", command).CombinedOutput()
}

// NextHops reads the router's RIB (zebra) for one prefix: the active next
// hops of the selected BGP route, sorted.
func NextHops(ns, dir string, pfx netip.Prefix) ([]string, error) {
	cmd := "show ip route " + pfx.String() + " json"
	if pfx.Addr().Is6() {
		cmd = "show ipv6 route " + pfx.String() + " json"
	}
	out, err := Vtysh(ns, dir, cmd)
	if err != nil {
		return nil, fmt.Errorf("vtysh %q: %v: %s", cmd, err, out)
	}
	var routes map[string][]struct {
		Protocol string `json:"protocol"`
		Selected bool   `json:"selected"`
		Nexthops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("parse %q: %v: %s", cmd, err, out)
	}
	var hops []string
	for _, r := range routes[pfx.String()] {
		if r.Protocol != "bgp" || !r.Selected {
			continue
		}
		for _, nh := range r.Nexthops {
			if nh.Active {
				hops = append(hops, nh.IP)
			}
		}
	}
	slices.Sort(hops)
	return hops, nil
}

// Path is one path of FRR's BGP table for a prefix, as `show bgp ... json`
// shows it.
type Path struct {
	NextHop string
	// LocalPref is 0 when the path has none (eBGP).
	LocalPref uint32
	// Communities and LargeCommunities are FRR's display strings, e.g.
	// "64512:100 no-export" and "64512:1:2".
	Communities      string
	LargeCommunities string
}

// BGPPaths reads FRR's BGP table (bgpd) for one prefix: every path received
// for it, sorted by next hop; none when no peer advertises it.
func BGPPaths(ns, dir string, pfx netip.Prefix) ([]Path, error) {
	family := "ipv4"
	if pfx.Addr().Is6() {
		family = "ipv6"
	}
	cmd := "show bgp " + family + " unicast " + pfx.String() + " json"
	out, err := Vtysh(ns, dir, cmd)
	if err != nil {
		return nil, fmt.Errorf("vtysh %q: %v: %s", cmd, err, out)
	}
	var table struct {
		Paths []struct {
			LocPrf    *uint32 `json:"locPrf"`
			Community *struct {
				String string `json:"string"`
			} `json:"community"`
			LargeCommunity *struct {
				String string `json:"string"`
			} `json:"largeCommunity"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(out, &table); err != nil {
		return nil, fmt.Errorf("parse %q: %v: %s", cmd, err, out)
	}
	var paths []Path
	for _, p := range table.Paths {
		// The peer, not the next hop field: IPv6 paths carry a global and a
		// link-local next hop, and the peer is the node either way.
		path := Path{NextHop: p.Peer.PeerID}
		if p.LocPrf != nil {
			path.LocalPref = *p.LocPrf
		}
		if p.Community != nil {
			path.Communities = p.Community.String
		}
		if p.LargeCommunity != nil {
			path.LargeCommunities = p.LargeCommunity.String
		}
		paths = append(paths, path)
	}
	slices.SortFunc(paths, func(a, b Path) int { return strings.Compare(a.NextHop, b.NextHop) })
	return paths, nil
}

// SessionStates reads bgpd's neighbours: the BGP state of each session by
// neighbour address, e.g. "Established" or "Active".
func SessionStates(ns, dir string) (map[string]string, error) {
	const cmd = "show bgp neighbors json"
	out, err := Vtysh(ns, dir, cmd)
	if err != nil {
		return nil, fmt.Errorf("vtysh %q: %v: %s", cmd, err, out)
	}
	var neighbours map[string]struct {
		State string `json:"bgpState"`
	}
	if err := json.Unmarshal(out, &neighbours); err != nil {
		return nil, fmt.Errorf("parse %q: %v: %s", cmd, err, out)
	}
	states := make(map[string]string, len(neighbours))
	for addr, n := range neighbours {
		states[addr] = n.State
	}
	return states, nil
}

// BFDPeers reads bfdd's sessions: the state ("up", "down", "init") by peer
// address.
func BFDPeers(ns, dir string) (map[string]string, error) {
	const cmd = "show bfd peers json"
	out, err := Vtysh(ns, dir, cmd)
	if err != nil {
		return nil, fmt.Errorf("vtysh %q: %v: %s", cmd, err, out)
	}
	var peers []struct {
		Peer   string `json:"peer"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(out, &peers); err != nil {
		return nil, fmt.Errorf("parse %q: %v: %s", cmd, err, out)
	}
	states := make(map[string]string, len(peers))
	for _, p := range peers {
		states[p.Peer] = p.Status
	}
	return states, nil
}

// Package frr reads the state of an FRR router for ironlb's tests.
package frr

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
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

package forwarder

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// udpFlow names the conntrack entries of a UDP virtual service that were
// translated to one backend.
type udpFlow struct {
	service netip.AddrPort
	backend netip.AddrPort
}

// udpFlows forgets the conntrack entries of UDP flows whose backend left
// its service. UDP has no end: a client that keeps sending from one socket
// would otherwise stay pinned by conntrack to a backend that is gone (the
// entry's timeout restarts with every datagram). TCP needs no such help:
// the dead backend's connection fails and the client reconnects.
//
// Flows are removed only after the commit that took the backend out of the
// table, so a datagram cannot recreate the entry with the old translation.
// A removal that fails is retried on the next flush.
type udpFlows struct {
	ns      netns.NsHandle
	h       *netlink.Handle
	pending map[udpFlow]bool
}

// note records the flows that turning old into desired leaves without a
// backend: backends removed from a UDP service, or all of a removed UDP
// service's. Drained backends (weight 0) keep their flows, as with TCP.
func (u *udpFlows) note(old, desired *VirtualService) {
	if old == nil || old.Protocol != UDP {
		return
	}
	kept := map[netip.AddrPort]bool{}
	if desired != nil {
		for _, b := range desired.Backends {
			kept[b.AddrPort()] = true
		}
	}
	for _, b := range old.Backends {
		if kept[b.AddrPort()] {
			continue
		}
		if u.pending == nil {
			u.pending = map[udpFlow]bool{}
		}
		u.pending[udpFlow{service: netip.AddrPortFrom(old.Addr, old.Port), backend: b.AddrPort()}] = true
	}
}

// flush deletes the conntrack entries of every pending flow: one dump of
// the conntrack table per address family that has some.
func (u *udpFlows) flush() error {
	if len(u.pending) == 0 {
		return nil
	}
	if u.h == nil {
		var err error
		if u.ns.IsOpen() {
			u.h, err = netlink.NewHandleAt(u.ns, unix.NETLINK_NETFILTER)
		} else {
			u.h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
		}
		if err != nil {
			return fmt.Errorf("open conntrack netlink: %w", err)
		}
	}
	var errs []error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		f := flowFilter{}
		for fl := range u.pending {
			if fl.service.Addr().Is4() == (fam == unix.AF_INET) {
				f[fl] = true
			}
		}
		if len(f) == 0 {
			continue
		}
		if _, err := u.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f); err != nil {
			errs = append(errs, fmt.Errorf("delete conntrack entries of %d removed UDP backends: %w", len(f), err))
			continue
		}
		for fl := range f {
			delete(u.pending, fl)
		}
	}
	return errors.Join(errs...)
}

func (u *udpFlows) close() {
	if u.h != nil {
		u.h.Close()
		u.h = nil
	}
}

// flowFilter matches the conntrack entries of its flows: UDP, sent to the
// service's address and port, answered by the backend's.
type flowFilter map[udpFlow]bool

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	svc, ok1 := netip.AddrFromSlice(flow.Forward.DstIP)
	be, ok2 := netip.AddrFromSlice(flow.Reverse.SrcIP)
	if !ok1 || !ok2 {
		return false
	}
	return f[udpFlow{
		service: netip.AddrPortFrom(svc.Unmap(), flow.Forward.DstPort),
		backend: netip.AddrPortFrom(be.Unmap(), flow.Reverse.SrcPort),
	}]
}

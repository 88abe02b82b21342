package frr

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KernelRoutes follows the main routing table of a namespace through
// netlink, as the kernel forwards by it: it learns of each route the moment
// zebra installs or removes it, without polling vtysh (about 70 ms a call).
type KernelRoutes struct {
	done chan struct{}

	mu sync.Mutex
	// err is the first error the subscription reported.
	err     error
	hops    map[netip.Prefix][]netip.Addr
	changed map[netip.Prefix]time.Time
	wake    chan struct{}
}

// WatchKernel starts following the main table of network namespace ns,
// existing routes included, until Close.
func WatchKernel(ns string) (*KernelRoutes, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	k := &KernelRoutes{done: make(chan struct{}), hops: map[netip.Prefix][]netip.Addr{}, changed: map[netip.Prefix]time.Time{}, wake: make(chan struct{})}
	updates := make(chan netlink.RouteUpdate, 1024)
	err = netlink.RouteSubscribeWithOptions(updates, k.done, netlink.RouteSubscribeOptions{
		Namespace:    &h,
		ListExisting: true,
		ErrorCallback: func(err error) {
			k.mu.Lock()
			if k.err == nil {
				k.err = err
			}
			k.mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes of %s: %w", ns, err)
	}
	go k.run(updates)
	return k, nil
}

// Close stops following the table.
func (k *KernelRoutes) Close() { close(k.done) }

func (k *KernelRoutes) run(updates <-chan netlink.RouteUpdate) {
	for u := range updates {
		// The time the update arrived: what a measurement wants.
		at := time.Now()
		if u.Table != unix.RT_TABLE_MAIN || u.Dst == nil {
			continue
		}
		pfx, ok := prefixOf(u.Dst)
		if !ok {
			continue
		}
		var hops []netip.Addr
		if u.Type == unix.RTM_NEWROUTE {
			hops = gateways(u.Route)
		}
		k.mu.Lock()
		if len(hops) == 0 {
			delete(k.hops, pfx)
		} else {
			k.hops[pfx] = hops
		}
		k.changed[pfx] = at
		close(k.wake)
		k.wake = make(chan struct{})
		k.mu.Unlock()
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func gateways(r netlink.Route) []netip.Addr {
	var out []netip.Addr
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	if r.Gw != nil {
		add(r.Gw)
	}
	for _, nh := range r.MultiPath {
		if nh.Gw != nil {
			add(nh.Gw)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// NextHops returns the kernel's gateways for pfx now, sorted; none when
// the table has no route for it.
func (k *KernelRoutes) NextHops(pfx netip.Prefix) []netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.hops[pfx])
}

// Wait blocks until ok holds for pfx's gateways (nil when it has no route)
// and returns the time the netlink update that made it so arrived; the
// zero time if it already held before any update for pfx.
func (k *KernelRoutes) Wait(ctx context.Context, pfx netip.Prefix, ok func(hops []netip.Addr) bool) (time.Time, error) {
	for {
		k.mu.Lock()
		hops, at, wake, err := k.hops[pfx], k.changed[pfx], k.wake, k.err
		k.mu.Unlock()
		if err != nil {
			return time.Time{}, fmt.Errorf("follow routes: %w", err)
		}
		if ok(hops) {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("route %v: kernel next hops %v: %w", pfx, hops, ctx.Err())
		case <-wake:
		}
	}
}

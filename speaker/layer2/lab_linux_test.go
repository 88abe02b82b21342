package layer2

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab: two network namespaces joined by a veth pair, a speaker side and
// a client side, on the lab segment 172.25.254.0/24 and fd00:254::/64.
// Nothing is routed out of them.
var (
	labNodeMAC = net.HardwareAddr{0x02, 0x25, 0x25, 0, 0, 0x0b}
	labVIP4    = netip.MustParseAddr("172.25.254.100")
	labVIP6    = netip.MustParseAddr("fd00:254::100")
	labOther4  = netip.MustParseAddr("172.25.254.101")
	staleMAC   = "02:de:ad:be:ef:01"
)

const (
	labNodeIf   = "spk0"
	labClientIf = "cli0"
)

type lab struct {
	node, client         netns.NsHandle
	nodeName, clientName string
	clientHandle         *netlink.Handle
}

// inNS runs f on an OS thread switched into ns; sockets f creates stay in
// ns. The thread goes back to the original namespace, or is discarded if
// it cannot.
func inNS[T any](ns netns.NsHandle, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			ch <- result{err: err}
			return
		}
		v, err := f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and raw sockets")
	}
	l := &lab{
		nodeName:   fmt.Sprintf("ironlb-l2t-%d-node", os.Getpid()),
		clientName: fmt.Sprintf("ironlb-l2t-%d-client", os.Getpid()),
	}
	var err error
	// NewNamed moves the calling thread into the new namespace: do it on a
	// thread of its own that moves back, or is discarded if it cannot.
	newNS := func(name string) (netns.NsHandle, error) {
		type result struct {
			ns  netns.NsHandle
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				ch <- result{netns.None(), err}
				return
			}
			defer orig.Close()
			ns, err := netns.NewNamed(name)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			ch <- result{ns, err}
		}()
		r := <-ch
		return r.ns, r.err
	}
	if l.node, err = newNS(l.nodeName); err != nil {
		t.Fatalf("create namespace %s: %v", l.nodeName, err)
	}
	t.Cleanup(func() { l.node.Close(); _ = netns.DeleteNamed(l.nodeName) })
	if l.client, err = newNS(l.clientName); err != nil {
		t.Fatalf("create namespace %s: %v", l.clientName, err)
	}
	t.Cleanup(func() { l.client.Close(); _ = netns.DeleteNamed(l.clientName) })

	hNode, err := netlink.NewHandleAt(l.node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hNode.Close)
	if l.clientHandle, err = netlink.NewHandleAt(l.client); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.clientHandle.Close)

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: labNodeIf, HardwareAddr: labNodeMAC},
		PeerName:      labClientIf,
		PeerNamespace: netlink.NsFd(int(l.client)),
	}
	if err := hNode.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	setup := func(h *netlink.Handle, ifName string, addrs ...string) {
		t.Helper()
		link, err := h.LinkByName(ifName)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				t.Fatal(err)
			}
			addr.Flags = unix.IFA_F_NODAD
			if err := h.AddrAdd(link, addr); err != nil {
				t.Fatalf("add %s to %s: %v", a, ifName, err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		lo, err := h.LinkByName("lo")
		if err == nil {
			_ = h.LinkSetUp(lo)
		}
	}
	setup(hNode, labNodeIf, "172.25.254.11/24", "fd00:254::11/64")
	setup(l.clientHandle, labClientIf, "172.25.254.200/24", "fd00:254::200/64")
	// Like a real node's, the interface has its link-local address before
	// the speaker starts; the kernel adds it shortly after the link is up.
	link, err := hNode.LinkByName(labNodeIf)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() bool {
		addrs, err := hNode.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				return true
			}
		}
		return false
	}, func() string { return labNodeIf + " never got a link-local address" })
	return l
}

// startResponders runs Responders with its sockets in the node namespace.
func (l *lab) startResponders(t *testing.T) *Responders {
	t.Helper()
	r := New(Config{
		Interfaces: func() ([]net.Interface, error) { return inNS(l.node, net.Interfaces) },
		Dial: func(ifi *net.Interface) (Conns, error) {
			return inNS(l.node, func() (Conns, error) { return DialConns(ifi) })
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := r.Start(ctx); err != nil {
			t.Errorf("Start() = %v", err)
		}
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// clientExec runs a command in the client namespace.
func (l *lab) clientExec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.clientName, name}, args...)...).CombinedOutput()
	return string(out), err
}

// neighbour returns the client's neighbour entry for addr.
func (l *lab) neighbour(addr netip.Addr) (mac string, state int, ok bool) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := l.clientHandle.NeighList(0, family)
	if err != nil {
		return "", 0, false
	}
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr {
			return n.HardwareAddr.String(), n.State, true
		}
	}
	return "", 0, false
}

func (l *lab) setStaleNeighbour(t *testing.T, addr netip.Addr) {
	t.Helper()
	link, err := l.clientHandle.LinkByName(labClientIf)
	if err != nil {
		t.Fatal(err)
	}
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	hw, _ := net.ParseMAC(staleMAC)
	if err := l.clientHandle.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family,
		State: netlink.NUD_STALE, IP: addr.AsSlice(), HardwareAddr: hw}); err != nil {
		t.Fatalf("set client neighbour %v: %v", addr, err)
	}
}

func poll(t *testing.T, timeout time.Duration, cond func() bool, why func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %v: %s", timeout, why())
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func TestLabARP(t *testing.T) {
	l := newLab(t)
	r := l.startResponders(t)
	// No interface named: every suitable interface in the node, which is
	// spk0 (lo is not suitable).
	if err := r.Sync(context.Background(), map[netip.Addr][]string{labVIP4: nil}); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() bool { return len(r.Owned()[labNodeIf]) == 1 },
		func() string { return fmt.Sprintf("Owned() = %v, want %v on %s", r.Owned(), labVIP4, labNodeIf) })

	out, err := l.clientExec("arping", "-c", "1", "-w", "5", "-I", labClientIf, labVIP4.String())
	if err != nil || !strings.Contains(strings.ToLower(out), labNodeMAC.String()) {
		t.Errorf("arping %v: err=%v, want a reply from %v; output:\n%s", labVIP4, err, labNodeMAC, out)
	}
	out, err = l.clientExec("arping", "-c", "2", "-w", "2", "-I", labClientIf, labOther4.String())
	if err == nil || strings.Contains(strings.ToLower(out), labNodeMAC.String()) {
		t.Errorf("arping %v (not owned): err=%v, want no reply; output:\n%s", labOther4, err, out)
	}

	// Losing the address silences the node.
	if err := r.Sync(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	out, err = l.clientExec("arping", "-c", "2", "-w", "2", "-I", labClientIf, labVIP4.String())
	if err == nil {
		t.Errorf("arping %v after losing it: want no reply; output:\n%s", labVIP4, out)
	}
}

func TestLabGratuitousMovesNeighbour(t *testing.T) {
	l := newLab(t)
	r := l.startResponders(t)
	for _, addr := range []netip.Addr{labVIP4, labVIP6} {
		// The client still points at the previous owner.
		l.setStaleNeighbour(t, addr)
		if mac, _, _ := l.neighbour(addr); mac != staleMAC {
			t.Fatalf("client neighbour %v = %q, want %q before takeover", addr, mac, staleMAC)
		}
		owned := map[netip.Addr][]string{labVIP4: {labNodeIf}}
		if addr.Is6() {
			owned[labVIP6] = []string{labNodeIf}
		}
		start := time.Now()
		if err := r.Sync(context.Background(), owned); err != nil {
			t.Fatal(err)
		}
		poll(t, 10*time.Second, func() bool {
			mac, _, _ := l.neighbour(addr)
			return mac == labNodeMAC.String()
		}, func() string {
			mac, state, ok := l.neighbour(addr)
			return fmt.Sprintf("client neighbour %v = %q (state %#x, present %v), want %v", addr, mac, state, ok, labNodeMAC)
		})
		t.Logf("client neighbour for %v moved %v after Sync", addr, time.Since(start))
	}
}

func TestLabNDP(t *testing.T) {
	l := newLab(t)
	r := l.startResponders(t)
	if err := r.Sync(context.Background(), map[netip.Addr][]string{labVIP6: {labNodeIf}}); err != nil {
		t.Fatal(err)
	}
	// The solicited-node group is joined in the node namespace.
	out, err := exec.Command("ip", "netns", "exec", l.nodeName, "cat", "/proc/net/igmp6").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ff0200000000000000000001ff000100") {
		t.Errorf("solicited-node group of %v not joined on %s (err %v):\n%s", labVIP6, labNodeIf, err, out)
	}

	// The client's kernel resolves the address through a multicast
	// solicitation when it sends a datagram (which nobody receives).
	_, err = inNS(l.client, func() (struct{}, error) {
		c, err := net.Dial("udp6", netip.AddrPortFrom(labVIP6, 9).String())
		if err != nil {
			return struct{}{}, err
		}
		defer c.Close()
		_, err = c.Write([]byte("resolve"))
		return struct{}{}, err
	})
	if err != nil {
		t.Fatalf("send a datagram to %v from the client: %v", labVIP6, err)
	}
	poll(t, 10*time.Second, func() bool {
		mac, state, _ := l.neighbour(labVIP6)
		return mac == labNodeMAC.String() && state&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0
	}, func() string {
		mac, state, ok := l.neighbour(labVIP6)
		neigh, _ := l.clientExec("ip", "-6", "neigh")
		return fmt.Sprintf("client neighbour %v = %q (state %#x, present %v), want %v; neighbours:\n%s",
			labVIP6, mac, state, ok, labNodeMAC, neigh)
	})

	// A unicast reachability probe, sent to the address itself, is answered
	// too, from a valid source with Solicited and Override set.
	type answer struct {
		na  *ndp.NeighborAdvertisement
		src netip.Addr
	}
	got, err := inNS(l.client, func() (answer, error) {
		ifi, err := net.InterfaceByName(labClientIf)
		if err != nil {
			return answer{}, err
		}
		c, _, err := ndp.Listen(ifi, ndp.UniqueLocal)
		if err != nil {
			return answer{}, err
		}
		defer c.Close()
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return answer{}, err
		}
		if err := c.WriteTo(&ndp.NeighborSolicitation{TargetAddress: labVIP6}, nil, labVIP6); err != nil {
			return answer{}, err
		}
		for {
			m, _, src, err := c.ReadFrom()
			if err != nil {
				return answer{}, err
			}
			if na, ok := m.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == labVIP6 {
				return answer{na, src}, nil
			}
		}
	})
	if err != nil {
		t.Fatalf("unicast probe of %v: %v", labVIP6, err)
	}
	if !got.na.Solicited || !got.na.Override || got.na.Router {
		t.Errorf("advertisement flags S=%v O=%v R=%v, want S and O only", got.na.Solicited, got.na.Override, got.na.Router)
	}
	if !got.src.IsLinkLocalUnicast() {
		t.Errorf("advertisement source %v, want the node's link-local address", got.src)
	}
}

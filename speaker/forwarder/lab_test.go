package forwarder

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The lab: a client and a node on the segment 172.25.254.0/24 +
// fd00:254::/64, and backends behind the node on 10.244.N.0/24 +
// fd00:10:244:N::/64. The client routes the service addresses to the node;
// nothing routes out of the lab.
var (
	clientAddr4 = netip.MustParseAddr("172.25.254.200")
	clientAddr6 = netip.MustParseAddr("fd00:254::200")
	nodeAddr4   = netip.MustParseAddr("172.25.254.11")
	nodeAddr6   = netip.MustParseAddr("fd00:254::11")
	labVIP4     = netip.MustParseAddr("172.25.254.50")
	labVIP6     = netip.MustParseAddr("fd00:254::50")
)

const (
	backendTCPPort = 8080
	backendUDPPort = 5353
)

type lab struct {
	node, client netns.NsHandle
	backends     []labBackend
}

type labBackend struct {
	name         string
	ns           netns.NsHandle
	addr4, addr6 netip.Addr
	// gw4 is the node's address on this backend's link: what a backend
	// sees as the client when the node masquerades.
	gw4, gw6 netip.Addr
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and programs the kernel")
	}
}

func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err = netns.New()
		if err != nil {
			errc <- err
			return
		}
		if err := netns.Set(orig); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func handleAt(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func writeSysctl(t testing.TB, ns netns.NsHandle, path, value string) {
	t.Helper()
	if err := withNetNS(ns, func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatalf("sysctl %s=%s: %v", path, value, err)
	}
}

// link creates a veth pair between a (name an) and b (name bn), addresses
// each end and brings both up.
func link(t testing.TB, a netns.NsHandle, an string, aAddrs []netip.Prefix, b netns.NsHandle, bn string, bAddrs []netip.Prefix) {
	t.Helper()
	ha, hb := handleAt(t, a), handleAt(t, b)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: an}, PeerName: bn, PeerNamespace: netlink.NsFd(int(b))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", an, bn, err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		name  string
		addrs []netip.Prefix
	}{{ha, an, aAddrs}, {hb, bn, bAddrs}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatalf("find %s: %v", side.name, err)
		}
		for _, p := range side.addrs {
			addr := &netlink.Addr{IPNet: prefixNet(p)}
			if p.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := side.h.AddrAdd(l, addr); err != nil {
				t.Fatalf("address %s on %s: %v", p, side.name, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			t.Fatalf("up %s: %v", side.name, err)
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func loUp(t testing.TB, ns netns.NsHandle) {
	t.Helper()
	h := handleAt(t, ns)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("up lo: %v", err)
	}
}

func route(t testing.TB, ns netns.NsHandle, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	h := handleAt(t, ns)
	r := &netlink.Route{Dst: prefixNet(dst), Gw: via.AsSlice()}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s: %v", dst, via, err)
	}
}

func newLab(t testing.TB, backends int) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{node: newNS(t), client: newNS(t)}
	for _, ns := range []netns.NsHandle{l.node, l.client} {
		loUp(t, ns)
	}
	link(t, l.node, "lan0", []netip.Prefix{netip.PrefixFrom(nodeAddr4, 24), netip.PrefixFrom(nodeAddr6, 64)},
		l.client, "eth0", []netip.Prefix{netip.PrefixFrom(clientAddr4, 24), netip.PrefixFrom(clientAddr6, 64)})
	writeSysctl(t, l.node, "/proc/sys/net/ipv4/ip_forward", "1")
	writeSysctl(t, l.node, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
	route(t, l.client, netip.PrefixFrom(labVIP4, 32), nodeAddr4)
	route(t, l.client, netip.PrefixFrom(labVIP6, 128), nodeAddr6)
	for i := 1; i <= backends; i++ {
		b := labBackend{
			name:  fmt.Sprintf("backend%d", i),
			ns:    newNS(t),
			addr4: netip.AddrFrom4([4]byte{10, 244, byte(i), 2}),
			gw4:   netip.AddrFrom4([4]byte{10, 244, byte(i), 1}),
			addr6: netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::2", i)),
			gw6:   netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::1", i)),
		}
		loUp(t, b.ns)
		link(t, l.node, fmt.Sprintf("pod%d", i), []netip.Prefix{netip.PrefixFrom(b.gw4, 24), netip.PrefixFrom(b.gw6, 64)},
			b.ns, "eth0", []netip.Prefix{netip.PrefixFrom(b.addr4, 24), netip.PrefixFrom(b.addr6, 64)})
		route(t, b.ns, netip.MustParsePrefix("0.0.0.0/0"), b.gw4)
		route(t, b.ns, netip.MustParsePrefix("::/0"), b.gw6)
		b.serve(t)
		l.backends = append(l.backends, b)
	}
	return l
}

// serve starts the backend's HTTP and UDP servers: both answer with the
// backend's name and the client address they saw.
func (b labBackend) serve(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := withNetNS(b.ns, func() error {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", backendTCPPort)); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", backendUDPPort))
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen: %v", b.name, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", b.name, r.RemoteAddr)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(fmt.Appendf(nil, "%s %s", b.name, from), from)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = pc.Close()
	})
}

// answer is what a backend said: who it is and whom it saw.
type answer struct {
	backend string
	client  netip.Addr
}

func parseAnswer(s string) (answer, error) {
	name, from, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return answer{}, fmt.Errorf("malformed answer %q", s)
	}
	ap, err := netip.ParseAddrPort(from)
	if err != nil {
		return answer{}, fmt.Errorf("malformed answer %q: %w", s, err)
	}
	return answer{backend: name, client: ap.Addr().Unmap()}, nil
}

// dialFromClient opens a connection from the client namespace.
func (l *lab) dialFromClient(ctx context.Context, network string, to netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := withNetNS(l.client, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, to.String())
		return err
	})
	return c, err
}

// get makes one HTTP request, on a new connection, from the client.
func (l *lab) get(ctx context.Context, to netip.AddrPort) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return l.dialFromClient(ctx, network, to)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+to.String()+"/", nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(string(body))
}

// query sends one UDP datagram from a new client socket and reads the reply.
func (l *lab) query(ctx context.Context, to netip.AddrPort) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := l.dialFromClient(ctx, "udp", to)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte("who")); err != nil {
		return answer{}, err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(string(buf[:n]))
}

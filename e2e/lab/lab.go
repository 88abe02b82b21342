// Package lab builds a network of Linux network namespaces that stands in for
// a bare-metal cluster: a layer-2 segment (a bridge) with a router, nodes, a
// client and a port for the host, and a "pod" behind every node. Everything
// the lab makes carries a per-run name prefix and is removed by Close.
//
// Address plan (the tutorials' network, so their manifests apply verbatim):
//
//	segment   172.25.254.0/24, fd00:254::/64
//	router    .1    fd00:254::1
//	nodeN     .1N   fd00:254::1N   (N = 1..Nodes)
//	client    .200  fd00:254::200
//	host      .254  fd00:254::254  (root namespace; the control plane)
//	podN      10.244.N.10/24 behind nodeN's 10.244.N.1
//
// No namespace has a route that leaves the lab: the router, the nodes'
// default gateway, has nowhere else to send packets.
package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	// Segment is the lab's IPv4 layer-2 network.
	Segment = netip.MustParsePrefix("172.25.254.0/24")
	// Segment6 is the lab's IPv6 layer-2 network.
	Segment6 = netip.MustParsePrefix("fd00:254::/64")
)

// MaxNodes keeps node addresses (.11 upwards) below the example pool
// 172.25.254.50-99.
const MaxNodes = 39

// Config says what to build.
type Config struct {
	// Nodes is the number of nodes; default 3.
	Nodes int
	// Prefix names everything the lab makes; default "ilb<pid><letter>-".
	// At most 12 bytes, so the root-namespace link name fits.
	Prefix string
	// LogDir holds process logs; default a new temporary directory, removed
	// by Close unless KeepLogs.
	LogDir   string
	KeepLogs bool
	// Backend is the path of the backend program started in every pod
	// (see e2e/backend); empty starts none.
	Backend string
	// BackendArgs are extra arguments for every backend.
	BackendArgs []string
	// NoPods leaves out the stand-in pod namespaces (Node.Pod is nil):
	// real kubelets run the pods, and their CNI owns 10.244.N.0/24 on the
	// node. The host-gw routes between nodes' pod networks stay.
	NoPods bool
	// Waiting, if set, is called once when another lab holds the host
	// address and New has to wait for it.
	Waiting func()
	// HostLock, if set, is the host lock the caller already holds (see
	// LockHost): New does not take it again and Close does not release it.
	HostLock *HostLock
}

// Node is a cluster node and the pod it runs.
type Node struct {
	*Host
	// Number is N in nodeN, from 1.
	Number int
	// PodCIDR is the node's pod network, 10.244.N.0/24.
	PodCIDR netip.Prefix
	// Gateway is the node's address on the pod network, 10.244.N.1.
	Gateway netip.Addr
	// Pod is the node's pod; its backend answers with the pod's name.
	Pod *Host
	// Backend is the backend process in the pod, if Config.Backend was set.
	Backend *Process
}

// Lab is a running lab. All fields are read-only.
type Lab struct {
	Prefix string
	LogDir string
	// Host is the root namespace's port on the segment (172.25.254.254);
	// Exec on it runs commands directly.
	Host   *Host
	Router *Host
	Client *Host
	Nodes  []*Node
	// Bridge is the namespace holding the bridge "br0"; it has no address.
	Bridge *Host
	// BringUp is how long New took to build the network.
	BringUp time.Duration

	cfg        Config
	lock       *os.File
	namespaces []string
	handles    []netns.NsHandle

	mu        sync.Mutex
	processes []*Process
	closed    bool
	logNames  map[string]bool
}

// bridgeName is the bridge inside the bridge namespace.
const bridgeName = "br0"

// nodeSysctls are what a Linux node of a cluster runs with.
var nodeSysctls = append([]sysctl{
	// Nodes route pod traffic and forwarded service traffic.
	{"net.ipv4.ip_forward", "1"},
	{"net.ipv6.conf.all.forwarding", "1"},
	{"net.ipv6.conf.default.forwarding", "1"},
}, endSysctls...)

// endSysctls are for every host of the lab; the client and pods, which do
// not forward, get only these.
var endSysctls = []sysctl{
	// Addresses survive a link going down, as on a node whose NIC flaps.
	{"net.ipv6.conf.all.keep_addr_on_down", "1"},
	{"net.ipv6.conf.default.keep_addr_on_down", "1"},
	// No duplicate address detection: addresses are usable at once instead
	// of after a second of tentative state, and the lab's plan is fixed.
	{"net.ipv6.conf.all.accept_dad", "0"},
	{"net.ipv6.conf.default.accept_dad", "0"},
	// No one in the lab sends router advertisements; refuse them anyway so
	// no route appears that the lab did not set.
	{"net.ipv6.conf.all.accept_ra", "0"},
	{"net.ipv6.conf.default.accept_ra", "0"},
	// Loose reverse-path filtering, the usual node setting: replies of
	// forwarded service traffic may come back on another interface.
	{"net.ipv4.conf.all.rp_filter", "2"},
	{"net.ipv4.conf.default.rp_filter", "2"},
}

// bridgeSysctls keep the switch silent: it forwards frames, it never speaks.
var bridgeSysctls = []sysctl{
	{"net.ipv6.conf.all.disable_ipv6", "1"},
	{"net.ipv6.conf.default.disable_ipv6", "1"},
}

// New builds the lab. On error everything already built is removed. It first
// removes leftovers of labs whose process died, and waits (bounded by ctx)
// while another lab of this machine is up, since both would claim the host
// address.
func New(ctx context.Context, cfg Config) (_ *Lab, err error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("new lab: %d nodes, want 1-%d", cfg.Nodes, MaxNodes)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = newPrefix()
	}
	if len(cfg.Prefix) > 12 {
		return nil, fmt.Errorf("new lab: prefix %q longer than 12 bytes", cfg.Prefix)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("new lab: network namespaces need root")
	}
	if err := SweepStale(); err != nil {
		return nil, fmt.Errorf("new lab: %w", err)
	}
	var lock *os.File
	if cfg.HostLock == nil {
		if lock, err = acquireHostLock(ctx, cfg.Waiting); err != nil {
			return nil, fmt.Errorf("new lab: %w", err)
		}
	}
	l := &Lab{Prefix: cfg.Prefix, cfg: cfg, lock: lock, logNames: map[string]bool{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if cfg.LogDir == "" {
		if l.LogDir, err = os.MkdirTemp("", cfg.Prefix+"logs-"); err != nil {
			return nil, fmt.Errorf("new lab: %w", err)
		}
	} else {
		l.LogDir = cfg.LogDir
		if err := os.MkdirAll(l.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("new lab: %w", err)
		}
	}
	start := time.Now()
	if err := l.build(); err != nil {
		return nil, fmt.Errorf("new lab %s: %w", cfg.Prefix, err)
	}
	l.BringUp = time.Since(start)
	if cfg.Backend != "" && !cfg.NoPods {
		for _, n := range l.Nodes {
			args := append([]string{"--name", n.Pod.Name}, cfg.BackendArgs...)
			if n.Backend, err = n.Pod.StartProcess(ProcessSpec{Label: "backend", Path: cfg.Backend, Args: args}); err != nil {
				return nil, fmt.Errorf("new lab: %w", err)
			}
		}
	}
	return l, nil
}

func host4(n int) netip.Addr {
	a := Segment.Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}

// host6 gives the IPv6 host the same digits as its IPv4 host number
// (.11 -> ::11), so the plan reads the same in both families.
func host6(n int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:254::%d", n))
}

func (l *Lab) newHost(name string, hostNumber int) *Host {
	return &Host{
		Name: name, Namespace: l.Prefix + name, Iface: "eth0",
		IPv4: host4(hostNumber), IPv6: host6(hostNumber), lab: l,
	}
}

func (l *Lab) build() error {
	if err := prepareNetnsDir(); err != nil {
		return err
	}
	l.Bridge = &Host{Name: "bridge", Namespace: l.Prefix + "bridge", lab: l}
	l.Router = l.newHost("router", 1)
	l.Client = l.newHost("client", 200)
	l.Host = &Host{Name: "host", Iface: l.Prefix + "lab", IPv4: host4(254), IPv6: host6(254), lab: l}
	for i := 1; i <= l.cfg.Nodes; i++ {
		n := &Node{Host: l.newHost(fmt.Sprintf("node%d", i), 10+i), Number: i}
		n.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		n.Gateway = netip.AddrFrom4([4]byte{10, 244, byte(i), 1})
		if !l.cfg.NoPods {
			n.Pod = &Host{
				Name: fmt.Sprintf("pod%d", i), Namespace: l.Prefix + fmt.Sprintf("pod%d", i), Iface: "eth0",
				IPv4: netip.AddrFrom4([4]byte{10, 244, byte(i), 10}), lab: l,
			}
		}
		l.Nodes = append(l.Nodes, n)
	}

	bridgeNS, err := l.namespace(l.Bridge.Namespace, bridgeSysctls)
	if err != nil {
		return err
	}
	bh, err := netlink.NewHandleAt(bridgeNS)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", l.Bridge.Namespace, err)
	}
	defer bh.Close()
	snooping := false
	// Without multicast snooping the bridge floods neighbour solicitations
	// like a plain switch, with no querier needed.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}, MulticastSnooping: &snooping}
	if err := bh.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	if err := bh.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge up: %w", err)
	}

	segmentHosts := []*Host{l.Router, l.Client}
	for _, n := range l.Nodes {
		segmentHosts = append(segmentHosts, n.Host)
	}
	for _, h := range segmentHosts {
		sysctls := nodeSysctls
		if h == l.Client {
			sysctls = endSysctls
		}
		ns, err := l.namespace(h.Namespace, sysctls)
		if err != nil {
			return err
		}
		if err := addPort(bh, br, h.Name, "eth0", netlink.NsFd(int(ns))); err != nil {
			return err
		}
		hh, err := netlink.NewHandleAt(ns)
		if err != nil {
			return fmt.Errorf("netlink in %s: %w", h.Namespace, err)
		}
		err = configureSegmentHost(hh, h, l.Router)
		hh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	for i, n := range l.Nodes {
		if err := l.routePods(n, i); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if n.Pod == nil {
			continue
		}
		if err := l.buildPod(n); err != nil {
			return fmt.Errorf("%s: %w", n.Pod.Name, err)
		}
	}
	return l.buildHostPort(bh, br)
}

// namespace creates a namespace of the lab and records it for Close.
func (l *Lab) namespace(name string, sysctls []sysctl) (netns.NsHandle, error) {
	h, err := createNamespace(name, sysctls)
	if err != nil {
		return h, err
	}
	l.namespaces = append(l.namespaces, name)
	l.handles = append(l.handles, h)
	return h, nil
}

// addPort creates a veth whose end portName is a port of the bridge and whose
// peer, named peerName, lands directly in another namespace (peerNS). The
// peer never exists in the root namespace, so nothing there changes.
func addPort(bh *netlink.Handle, br netlink.Link, portName, peerName string, peerNS any) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: portName, MasterIndex: br.Attrs().Index},
		PeerName:      peerName,
		PeerNamespace: peerNS,
	}
	if err := bh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add bridge port %s: %w", portName, err)
	}
	if err := bh.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set bridge port %s up: %w", portName, err)
	}
	return nil
}

func addAddr(h *netlink.Handle, link netlink.Link, a netip.Addr, bits int) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add %s/%d to %s: %w", a, bits, link.Attrs().Name, err)
	}
	return nil
}

func addRoute(h *netlink.Handle, link netlink.Link, dst netip.Prefix, via netip.Addr) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: via.AsSlice()}
	if dst.IsValid() {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	} else if via.Is4() {
		// Default route: netlink wants the family spelled out.
		r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	} else {
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("add route %v via %s: %w", dst, via, err)
	}
	return nil
}

// configureSegmentHost addresses eth0 and sets routes. Every host but the
// router uses the router as default gateway; the router has no default
// route, so nothing can leave the lab through it.
func configureSegmentHost(h *netlink.Handle, host, router *Host) error {
	link, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	if err := addAddr(h, link, host.IPv4, Segment.Bits()); err != nil {
		return err
	}
	if err := addAddr(h, link, host.IPv6, Segment6.Bits()); err != nil {
		return err
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	if host == router {
		return nil
	}
	if err := addRoute(h, link, netip.Prefix{}, router.IPv4); err != nil {
		return err
	}
	return addRoute(h, link, netip.Prefix{}, router.IPv6)
}

// nodeHandle is a netlink handle inside node n's namespace.
func (l *Lab) nodeHandle(n *Node) (*netlink.Handle, error) {
	nh, err := netlink.NewHandleAt(l.handles[slices.Index(l.namespaces, n.Namespace)])
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.Namespace, err)
	}
	return nh, nil
}

// routePods sets node i's host-gw routes: the node reaches every other
// node's pod network through that node's segment address.
func (l *Lab) routePods(n *Node, i int) error {
	nh, err := l.nodeHandle(n)
	if err != nil {
		return err
	}
	defer nh.Close()
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	for j, other := range l.Nodes {
		if j == i {
			continue
		}
		if err := addRoute(nh, eth0, other.PodCIDR, other.IPv4); err != nil {
			return err
		}
	}
	return nil
}

// buildPod wires node n's stand-in pod behind the node's 10.244.N.1.
func (l *Lab) buildPod(n *Node) error {
	podNS, err := l.namespace(n.Pod.Namespace, endSysctls)
	if err != nil {
		return err
	}
	nh, err := l.nodeHandle(n)
	if err != nil {
		return err
	}
	defer nh.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "vethpod"},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(podNS)),
	}
	if err := nh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add pod veth: %w", err)
	}
	if err := addAddr(nh, veth, n.Gateway, n.PodCIDR.Bits()); err != nil {
		return err
	}
	if err := nh.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set vethpod up: %w", err)
	}

	ph, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", n.Pod.Namespace, err)
	}
	defer ph.Close()
	podLink, err := ph.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0: %w", err)
	}
	if err := addAddr(ph, podLink, n.Pod.IPv4, n.PodCIDR.Bits()); err != nil {
		return err
	}
	if err := ph.LinkSetUp(podLink); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	return addRoute(ph, podLink, netip.Prefix{}, n.Gateway)
}

// buildHostPort gives the root namespace its port. Only the segment's
// connected routes appear in the root namespace (they go with the link);
// no sysctl of the root namespace is touched except this link's own.
func (l *Lab) buildHostPort(bh *netlink.Handle, br netlink.Link) error {
	root, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get root namespace: %w", err)
	}
	defer root.Close()
	if err := addPort(bh, br, "host", l.Host.Iface, netlink.NsFd(int(root))); err != nil {
		return err
	}
	link, err := netlink.LinkByName(l.Host.Iface)
	if err != nil {
		return fmt.Errorf("find %s: %w", l.Host.Iface, err)
	}
	if err := writeSysctls([]sysctl{
		{"net.ipv6.conf." + l.Host.Iface + ".accept_dad", "0"},
		{"net.ipv6.conf." + l.Host.Iface + ".accept_ra", "0"},
		{"net.ipv6.conf." + l.Host.Iface + ".keep_addr_on_down", "1"},
	}); err != nil {
		return err
	}
	h := &netlink.Handle{}
	if err := addAddr(h, link, l.Host.IPv4, Segment.Bits()); err != nil {
		return err
	}
	if err := addAddr(h, link, l.Host.IPv6, Segment6.Bits()); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", l.Host.Iface, err)
	}
	return nil
}

// Hosts returns every host of the lab with an address, pods included.
func (l *Lab) Hosts() []*Host {
	hs := []*Host{l.Host, l.Router, l.Client}
	for _, n := range l.Nodes {
		hs = append(hs, n.Host)
	}
	for _, n := range l.Nodes {
		if n.Pod != nil {
			hs = append(hs, n.Pod)
		}
	}
	return hs
}

// Node returns the node with that name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (l *Lab) newLogFile(base string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	name := base
	for i := 2; l.logNames[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	l.logNames[name] = true
	return filepath.Join(l.LogDir, name+".log"), nil
}

func (l *Lab) track(p *Process) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("start %s on %s: lab is closed", p.Label, p.Host.Name)
	}
	l.processes = append(l.processes, p)
	return nil
}

func (l *Lab) untrack(p *Process) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.processes = slices.DeleteFunc(l.processes, func(q *Process) bool { return q == p })
}

// Processes returns the processes started in the lab, in start order.
func (l *Lab) Processes() []*Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.processes)
}

// Logs returns every process's log, each under a header naming the process
// and how it ended, for printing when a test fails.
func (l *Lab) Logs() string {
	var b strings.Builder
	for _, p := range l.Processes() {
		fmt.Fprintf(&b, "===== %s =====\n", p)
		log := p.Log()
		b.WriteString(log)
		if log != "" && !strings.HasSuffix(log, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Close stops the lab's processes (SIGTERM, then SIGKILL after a grace
// period), removes its namespaces and links, and releases the host address.
// It is safe to call more than once and on a half-built lab.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := slices.Clone(l.processes)
	l.mu.Unlock()

	var errs []error
	var wg sync.WaitGroup
	for _, p := range slices.Backward(procs) {
		wg.Go(func() {
			// Processes are ours; an exit status is their business.
			_ = p.Stop(5 * time.Second)
		})
	}
	wg.Wait()
	for _, h := range l.handles {
		h.Close()
	}
	// Sweep also finds what a half-finished build made but did not record.
	if err := Sweep(l.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("close lab %s: %w", l.Prefix, err))
	}
	if l.lock != nil {
		l.lock.Close()
	}
	if l.cfg.LogDir == "" && !l.cfg.KeepLogs && l.LogDir != "" {
		if err := os.RemoveAll(l.LogDir); err != nil {
			errs = append(errs, fmt.Errorf("close lab %s: remove logs: %w", l.Prefix, err))
		}
	}
	return errors.Join(errs...)
}

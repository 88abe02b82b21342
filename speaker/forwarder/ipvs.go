package forwarder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// IPVS carries virtual services with kernel IPVS in NAT (masquerading)
// mode, programmed over generic netlink with moby/ipvs: pinned for the
// project, proven in the VM, and its Service/Destination pair maps one to
// one onto VirtualService/Backend (cloudflare/ipvs would do as well). Note
// that moby/ipvs tries `modprobe ip_vs` once per process and resolves the
// IPVS family once: check Available before building an IPVS.
//
// IPVS only accepts packets for local addresses, so every service address
// is bound (/32, /128) on a dummy interface. So that binding does not make
// the node answer ARP for addresses it does not announce, Sync sets
// net.ipv4.conf.all.arp_ignore=1 and arp_announce=2, exactly what
// kube-proxy's strictARP sets: the kernel then answers ARP only for
// addresses on the receiving interface, and the layer-2 responder alone
// answers for service addresses. IPv6 needs nothing: neighbour discovery is
// answered per interface already.
//
// Masquerade services get the client's address rewritten to the node's by
// the nftables postrouting rule of an NFTables table kept in "masquerade
// only" mode, which requires net.ipv4.vs.conntrack=1 so IPVS connections
// pass through conntrack and NAT.
//
// A service in the kernel's IPVS table is ironlb's when its address is on
// the dummy interface or in the desired table; others (kube-proxy's, for
// one) are left alone.
//
// Every sync reads the whole service list back (one request) and the
// destinations of every service it is about to change; IPVS has no
// generation counter, and a request per service would make a one-endpoint
// change cost as much as the table, so the destinations of unchanged
// services are re-read 256 at a time in rotation. A destination list
// someone else changed is thus repaired within len(services)/256 syncs; a
// failed sync forces a full read.
type IPVS struct {
	cfg  IPVSConfig
	ipvs *ipvs.Handle
	nl   *netlink.Handle
	masq *NFTables

	mu sync.Mutex
	// known is what the last successful sync left in IPVS, sorted by key;
	// nil forces a full read. See read for how it is used.
	known  []VirtualService
	cursor int
}

// verifyWindow is how many unchanged services a sync re-reads, in
// rotation, to find destinations someone else changed.
const verifyWindow = 256

// IPVSConfig configures an IPVS forwarder.
type IPVSConfig struct {
	// NetNS is the network namespace to program; 0 (or netns.None()) means
	// the caller's.
	NetNS netns.NsHandle
	// Interface is the dummy interface holding service addresses (default
	// "ironlb0").
	Interface string
	// Table and MasqueradeMark configure the nftables table used for
	// masquerading, as in NFTablesConfig.
	Table          string
	MasqueradeMark uint32
	Logger         logr.Logger
}

const defaultInterface = "ironlb0"

// Flags of an IPVS service (include/uapi/linux/ip_vs.h).
const (
	ipvsPersistent = 0x1
	ipvsHashed     = 0x2
)

// Available reports whether the kernel offers IPVS, and why (not).
func Available() (bool, string) {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		return true, "ip_vs is loaded (/proc/net/ip_vs exists)"
	}
	// Resolving the family makes the kernel load ip_vs if it is a module.
	if _, err := netlink.GenlFamilyGet("IPVS"); err == nil {
		return true, "generic netlink family IPVS resolves"
	} else {
		return false, fmt.Sprintf("no IPVS in this kernel: /proc/net/ip_vs is missing and generic netlink family IPVS does not resolve (%v)", err)
	}
}

// NewIPVS returns an IPVS forwarder for cfg.NetNS. It opens netlink sockets
// but changes nothing until Sync.
func NewIPVS(cfg IPVSConfig) (*IPVS, error) {
	if cfg.Interface == "" {
		cfg.Interface = defaultInterface
	}
	ns := cfg.NetNS
	if ns == 0 {
		ns = netns.None()
	}
	path := ""
	if ns.IsOpen() {
		path = fmt.Sprintf("/proc/self/fd/%d", int(ns))
	}
	h, err := ipvs.New(path)
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink: %w", err)
	}
	var nl *netlink.Handle
	if ns.IsOpen() {
		nl, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	masq, err := NewNFTables(NFTablesConfig{NetNS: int(ns), Table: cfg.Table, MasqueradeMark: cfg.MasqueradeMark, Logger: cfg.Logger})
	if err != nil {
		h.Close()
		nl.Close()
		return nil, err
	}
	masq.masqueradeOnly = true
	cfg.NetNS = ns
	return &IPVS{cfg: cfg, ipvs: h, nl: nl, masq: masq}, nil
}

// Close releases the netlink sockets; the kernel state stays.
func (v *IPVS) Close() error {
	v.ipvs.Close()
	v.nl.Close()
	return v.masq.Close()
}

// Sync makes IPVS carry exactly services. Invalid services are left out
// and reported in the returned error; the rest are still applied.
func (v *IPVS) Sync(ctx context.Context, services []VirtualService) error {
	desired, invalid := Prepare(services)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.sync(ctx, desired); err != nil {
		return errors.Join(err, invalid)
	}
	return invalid
}

// Read returns the virtual services IPVS holds for ironlb.
func (v *IPVS) Read(ctx context.Context) ([]VirtualService, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	dummy, err := v.dummy()
	if err != nil {
		return nil, err
	}
	bound, err := v.bound(dummy)
	if err != nil {
		return nil, err
	}
	return v.read(ctx, bound, nil, nil)
}

func (v *IPVS) sync(ctx context.Context, desired []VirtualService) error {
	if err := v.prepareNode(); err != nil {
		return err
	}
	dummy, err := v.dummy()
	if err != nil {
		return err
	}
	bound, err := v.bound(dummy)
	if err != nil {
		return err
	}
	vips := map[netip.Addr]bool{}
	for _, vs := range desired {
		vips[vs.Addr] = true
	}
	actual, err := v.read(ctx, bound, vips, v.trusted(desired))
	if err != nil {
		v.known = nil
		return err
	}
	if err := v.apply(ctx, dummy, bound, vips, actual, desired); err != nil {
		v.known = nil
		return err
	}
	v.known = desired
	return nil
}

// trusted returns the services whose destinations this sync may take from
// the last sync instead of the kernel: those the desired table leaves as
// they were, minus a rotating window that is re-read to catch changes made
// by others. nil means read everything.
func (v *IPVS) trusted(desired []VirtualService) map[Key]*VirtualService {
	if v.known == nil {
		return nil
	}
	out := make(map[Key]*VirtualService, len(v.known))
	for i := range v.known {
		out[v.known[i].Key] = &v.known[i]
	}
	for i := range desired {
		if k, ok := out[desired[i].Key]; ok && !slices.Equal(k.Backends, desired[i].Backends) {
			delete(out, desired[i].Key)
		}
	}
	n := len(v.known)
	for i := 0; i < min(verifyWindow, n); i++ {
		delete(out, v.known[(v.cursor+i)%n].Key)
	}
	if n > 0 {
		v.cursor = (v.cursor + verifyWindow) % n
	}
	return out
}

func (v *IPVS) apply(ctx context.Context, dummy netlink.Link, bound, vips map[netip.Addr]bool, actual, desired []VirtualService) error {
	// Addresses first: IPVS sees traffic only for local addresses.
	for a := range vips {
		if !bound[a] {
			if err := v.nl.AddrAdd(dummy, hostAddr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("bind %s on %s: %w", a, v.cfg.Interface, err)
			}
		}
	}
	c := Diff(actual, desired)
	for _, k := range c.Delete {
		if err := v.ipvs.DelService(toIPVSService(VirtualService{Key: k})); err != nil {
			return fmt.Errorf("delete IPVS service %s: %w", k, err)
		}
	}
	for _, vs := range c.Add {
		s := toIPVSService(vs)
		if err := v.ipvs.NewService(s); err != nil {
			return fmt.Errorf("add IPVS service %s: %w", vs.Key, err)
		}
		for _, b := range vs.Backends {
			if err := v.ipvs.NewDestination(s, toIPVSDestination(b)); err != nil {
				return fmt.Errorf("add IPVS destination %v to %s: %w", b.AddrPort(), vs.Key, err)
			}
		}
	}
	for _, vs := range c.Update {
		if err := v.ipvs.UpdateService(toIPVSService(vs)); err != nil {
			return fmt.Errorf("update IPVS service %s: %w", vs.Key, err)
		}
	}
	for _, bc := range c.Backends {
		s := toIPVSService(VirtualService{Key: bc.Service})
		for _, b := range bc.Delete {
			if err := v.ipvs.DelDestination(s, toIPVSDestination(b)); err != nil {
				return fmt.Errorf("delete IPVS destination %v of %s: %w", b.AddrPort(), bc.Service, err)
			}
		}
		for _, b := range bc.Update {
			if err := v.ipvs.UpdateDestination(s, toIPVSDestination(b)); err != nil {
				return fmt.Errorf("update IPVS destination %v of %s: %w", b.AddrPort(), bc.Service, err)
			}
		}
		for _, b := range bc.Add {
			if err := v.ipvs.NewDestination(s, toIPVSDestination(b)); err != nil {
				return fmt.Errorf("add IPVS destination %v to %s: %w", b.AddrPort(), bc.Service, err)
			}
		}
	}
	var masq []VirtualService
	for _, vs := range desired {
		if vs.Masquerade {
			masq = append(masq, VirtualService{Key: vs.Key, Scheduler: DefaultScheduler, Masquerade: true})
		}
	}
	if err := v.masq.Sync(ctx, masq); err != nil {
		return fmt.Errorf("masquerade rules: %w", err)
	}
	// Addresses last, once no service uses them.
	for a := range bound {
		if !vips[a] {
			if err := v.nl.AddrDel(dummy, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("unbind %s from %s: %w", a, v.cfg.Interface, err)
			}
		}
	}
	if !c.Empty() {
		v.cfg.Logger.V(1).Info("synced IPVS forwarder", "added", len(c.Add), "updated", len(c.Update),
			"deleted", len(c.Delete), "backendsChanged", len(c.Backends))
	}
	return nil
}

// read returns ironlb's services in IPVS: those on a bound or wanted
// address. Masquerade comes from the nftables set. IPVS has no generation
// counter to prove nothing changed, and reading destinations costs a
// request per service, so a service in trusted whose settings the kernel
// still reports unchanged keeps its last known destinations; the services
// list itself is always read whole.
func (v *IPVS) read(ctx context.Context, bound, wanted map[netip.Addr]bool, trusted map[Key]*VirtualService) ([]VirtualService, error) {
	svcs, err := v.ipvs.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	masq, err := v.masq.Read(ctx)
	if err != nil {
		return nil, err
	}
	masqueraded := map[Key]bool{}
	for _, vs := range masq {
		masqueraded[vs.Key] = true
	}
	var out []VirtualService
	for _, s := range svcs {
		vs, ok := fromIPVSService(s)
		if !ok || !(bound[vs.Addr] || wanted[vs.Addr]) {
			continue
		}
		vs.Masquerade = masqueraded[vs.Key]
		if k, ok := trusted[vs.Key]; ok && sameSettings(*k, vs) {
			vs.Backends = k.Backends
			out = append(out, vs)
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dests, err := v.ipvs.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("list IPVS destinations of %s: %w", vs.Key, err)
		}
		for _, d := range dests {
			if b, ok := fromIPVSDestination(d); ok {
				vs.Backends = append(vs.Backends, b)
			}
		}
		slices.SortFunc(vs.Backends, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
		out = append(out, vs)
	}
	slices.SortFunc(out, func(a, b VirtualService) int { return compareKeys(a.Key, b.Key) })
	return out, nil
}

// dummy returns the interface holding service addresses, creating it.
func (v *IPVS) dummy() (netlink.Link, error) {
	l, err := v.nl.LinkByName(v.cfg.Interface)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		if err := v.nl.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: v.cfg.Interface}}); err != nil {
			return nil, fmt.Errorf("create %s: %w", v.cfg.Interface, err)
		}
		l, err = v.nl.LinkByName(v.cfg.Interface)
	}
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", v.cfg.Interface, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := v.nl.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bring %s up: %w", v.cfg.Interface, err)
		}
	}
	return l, nil
}

func (v *IPVS) bound(l netlink.Link) (map[netip.Addr]bool, error) {
	addrs, err := v.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", v.cfg.Interface, err)
	}
	out := map[netip.Addr]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out[ip.Unmap()] = true
		}
	}
	return out, nil
}

func hostAddr(a netip.Addr) *netlink.Addr {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

// nodeSysctls are what IPVS NAT needs from the node: conntrack for the
// masquerade rule, and strictARP's ARP behaviour for the bound addresses.
var nodeSysctls = []struct{ path, value string }{
	{"/proc/sys/net/ipv4/vs/conntrack", "1"},
	{"/proc/sys/net/ipv4/conf/all/arp_ignore", "1"},
	{"/proc/sys/net/ipv4/conf/all/arp_announce", "2"},
	{"/proc/sys/net/ipv4/ip_forward", "1"},
}

func (v *IPVS) prepareNode() error {
	return withNetNS(v.cfg.NetNS, func() error {
		for _, s := range nodeSysctls {
			cur, err := os.ReadFile(s.path)
			if err == nil && string(cur) == s.value+"\n" {
				continue
			}
			if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("set %s=%s: %w", s.path, s.value, err)
			}
		}
		return nil
	})
}

// withNetNS runs fn on an OS thread inside ns (the caller's namespace when
// ns is not open). A thread that cannot return is not reused.
func withNetNS(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func toIPVSService(vs VirtualService) *ipvs.Service {
	s := &ipvs.Service{
		Address:       vs.Addr.AsSlice(),
		Protocol:      unix.IPPROTO_TCP,
		Port:          vs.Port,
		SchedName:     schedulerName(vs.Scheduler),
		AddressFamily: family(vs.Addr),
		Netmask:       0xffffffff,
	}
	if vs.Protocol == UDP {
		s.Protocol = unix.IPPROTO_UDP
	}
	if vs.Addr.Is6() {
		// IPv6 services take a prefix length here, IPv4 ones a mask.
		s.Netmask = 128
	}
	if secs := uint32(vs.Affinity.Seconds()); secs > 0 {
		s.Flags |= ipvsPersistent
		s.Timeout = secs
	}
	return s
}

func fromIPVSService(s *ipvs.Service) (VirtualService, bool) {
	addr, ok := netip.AddrFromSlice(s.Address)
	if !ok || s.FWMark != 0 {
		return VirtualService{}, false
	}
	vs := VirtualService{Key: Key{Addr: addr.Unmap(), Port: s.Port}, Scheduler: s.SchedName}
	switch s.Protocol {
	case unix.IPPROTO_TCP:
		vs.Protocol = TCP
	case unix.IPPROTO_UDP:
		vs.Protocol = UDP
	default:
		return VirtualService{}, false
	}
	// The kernel adds its own hashed flag; only persistence is ours.
	if s.Flags&^ipvsHashed&ipvsPersistent != 0 {
		vs.Affinity = secondsDuration(s.Timeout)
	}
	return vs, true
}

func secondsDuration(s uint32) time.Duration { return time.Duration(s) * time.Second }

func toIPVSDestination(b Backend) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         b.Addr.AsSlice(),
		Port:            b.Port,
		Weight:          b.Weight,
		ConnectionFlags: ipvs.ConnectionFlagMasq,
		AddressFamily:   family(b.Addr),
	}
}

func fromIPVSDestination(d *ipvs.Destination) (Backend, bool) {
	addr, ok := netip.AddrFromSlice(d.Address)
	if !ok {
		return Backend{}, false
	}
	return Backend{Addr: addr.Unmap(), Port: d.Port, Weight: d.Weight}, true
}

package forwarder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
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
// Level-triggered at the cost of the change, not of the table: IPVS has
// no generation counter to prove nobody else changed it, and reading it
// back whole costs a request per service (10,000 services: seconds). So a
// sync reads the kernel in full (services, their destinations, the bound
// addresses, the masquerade set, the sysctls) only when it has no record
// of its own (the first sync, and any sync after one that failed), when
// the dummy interface was replaced, and at the first sync once
// ReadBackInterval has passed since the last full read. In between, what
// the last sync left stands for the kernel: a sync compares the desired
// table with that record, reads back with GetService and GetDestinations
// only the services that differ plus verifyWindow others in rotation, and
// applies the difference there, binding and unbinding only the addresses
// those services gain or lose. Whatever another program changes is thus
// repaired at the latest by the first sync after ReadBackInterval (a
// destination list by the rotation sooner), and any failed netlink request
// (ENOENT, EEXIST: the kernel was not what the record said) fails the sync
// and forces a full read on the next one.
type IPVS struct {
	cfg  IPVSConfig
	ipvs *ipvs.Handle
	nl   *netlink.Handle
	masq *NFTables

	mu  sync.Mutex
	udp udpFlows
	// known is what the last successful sync left in IPVS, sorted by key;
	// nil forces a full read.
	known []VirtualService
	// link is the index of the dummy interface known's addresses are
	// bound on; readAt is when the last full read ended (zero forces one).
	link   int
	readAt time.Time
	cursor int
	now    func() time.Time
}

// verifyWindow is how many unchanged services a sync between full reads
// re-reads, in rotation, to find what someone else changed in them sooner
// than the next full read. Each costs two requests (about 3 ms under the
// VM's software emulation, well under one natively), so the window stays
// small: the full read is what bounds a repair.
const verifyWindow = 4

// defaultReadBack bounds how long the forwarder trusts its record between
// full reads. A full read of 10,000 services costs two requests per
// service (seconds under the VM's emulation, far less on a real node;
// kube-proxy's IPVS mode reads as much every 30 s), so once a minute keeps
// it a small share of the time, while a change by another program lasts
// at most a minute plus the time to the next sync.
const defaultReadBack = time.Minute

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
	// ReadBackInterval is how long a sync may trust what the previous
	// syncs left instead of reading the whole table back (default one
	// minute); see IPVS.
	ReadBackInterval time.Duration
	Logger           logr.Logger
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
	if cfg.ReadBackInterval == 0 {
		cfg.ReadBackInterval = defaultReadBack
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
	return &IPVS{cfg: cfg, ipvs: h, nl: nl, masq: masq, udp: udpFlows{ns: ns}, now: time.Now}, nil
}

// Close releases the netlink sockets; the kernel state stays.
func (v *IPVS) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.udp.close()
	v.ipvs.Close()
	v.nl.Close()
	return v.masq.Close()
}

// Sync makes IPVS carry exactly services. Invalid services are left out
// and reported in the returned error; the rest are still applied.
func (v *IPVS) Sync(ctx context.Context, services []VirtualService) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	desired, invalid := v.prepare(services)
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
	return v.read(ctx, bound, nil)
}

// Cleanup removes ironlb's IPVS services, the dummy interface with the
// addresses bound on it, and the masquerade table, if they are still what
// the last sync left; see Cleaner. The ARP sysctls stay: kube-proxy's
// strictARP wants the same values, and other services may rely on them.
func (v *IPVS) Cleanup(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.known == nil {
		return nil
	}
	l, err := v.nl.LinkByName(v.cfg.Interface)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("%s is gone: %w", v.cfg.Interface, ErrChangedSinceSync)
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", v.cfg.Interface, err)
	}
	bound, err := v.bound(l)
	if err != nil {
		return err
	}
	vips := map[netip.Addr]bool{}
	for _, vs := range v.known {
		vips[vs.Addr] = true
	}
	actual, err := v.read(ctx, bound, vips)
	if err != nil {
		return err
	}
	if !maps.Equal(bound, vips) || !Diff(actual, v.known).Empty() {
		return fmt.Errorf("IPVS services of %s: %w", v.cfg.Interface, ErrChangedSinceSync)
	}
	if err := v.masq.unchangedSinceSync(ctx); err != nil {
		return err
	}
	for _, vs := range actual {
		if err := v.ipvs.DelService(toIPVSService(vs)); err != nil {
			return fmt.Errorf("delete IPVS service %s: %w", vs.Key, err)
		}
	}
	v.known = nil
	if err := v.nl.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", v.cfg.Interface, err)
	}
	return v.masq.Cleanup(ctx)
}

func (v *IPVS) sync(ctx context.Context, desired []VirtualService) error {
	dummy, err := v.dummy()
	if err != nil {
		v.known = nil
		return err
	}
	full := v.known == nil || dummy.Attrs().Index != v.link || v.now().Sub(v.readAt) >= v.cfg.ReadBackInterval
	if full {
		err = v.syncFull(ctx, dummy, desired)
	} else {
		err = v.syncChanges(ctx, dummy, desired)
	}
	if err != nil {
		v.known = nil
		return err
	}
	v.known, v.link = desired, dummy.Attrs().Index
	if full {
		// Counted from the end: a full sync slower than the interval must
		// not make every following sync a full one.
		v.readAt = v.now()
	}
	if err := v.udp.flush(); err != nil {
		// IPVS is right; the flows are retried on the next sync.
		v.cfg.Logger.Error(err, "flush conntrack entries of removed UDP backends")
	}
	return nil
}

// prepare is Prepare for a table that mostly repeats the last sync's, as
// Expand's output (canonical and sorted) does: a service identical to one
// the last sync applied is valid and canonical already, and its copy is
// reused, so only the services that changed are validated and copied.
// Prepare alone would allocate the whole table again on every sync, which
// costs more than the rest of a one-change sync.
func (v *IPVS) prepare(services []VirtualService) ([]VirtualService, error) {
	if v.known == nil {
		return Prepare(services)
	}
	out := make([]VirtualService, 0, len(services))
	var errs []error
	j := 0
	for i := range services {
		vs := &services[i]
		for j < len(v.known) && compareKeys(v.known[j].Key, vs.Key) < 0 {
			j++
		}
		if j < len(v.known) && v.known[j].Key == vs.Key && sameService(&v.known[j], vs) {
			out = append(out, v.known[j])
			continue
		}
		p, err := Prepare(services[i : i+1])
		errs = append(errs, err)
		out = append(out, p...)
	}
	for i := 1; i < len(out); i++ {
		if compareKeys(out[i-1].Key, out[i].Key) >= 0 {
			// Not in canonical order, or duplicates: no shortcut.
			return Prepare(services)
		}
	}
	return out, errors.Join(errs...)
}

// syncFull reads everything back and repairs whatever differs.
func (v *IPVS) syncFull(ctx context.Context, dummy netlink.Link, desired []VirtualService) error {
	if err := v.prepareNode(); err != nil {
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
	actual, err := v.read(ctx, bound, vips)
	if err != nil {
		return err
	}
	var bind, unbind []netip.Addr
	for a := range vips {
		if !bound[a] {
			bind = append(bind, a)
		}
	}
	for a := range bound {
		if !vips[a] {
			unbind = append(unbind, a)
		}
	}
	return v.apply(ctx, dummy, ipvsPlan{bind: bind, unbind: unbind, actual: actual, desired: desired, table: desired, masq: true, full: true})
}

// syncChanges trusts v.known for everything but the services that change
// or go and the verify window, which it reads back.
func (v *IPVS) syncChanges(ctx context.Context, dummy netlink.Link, desired []VirtualService) error {
	keys := v.touched(desired)
	actual := make([]VirtualService, 0, len(keys))
	want := make([]VirtualService, 0, len(keys))
	masqChanged := false
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		old, vs := find(v.known, k), find(desired, k)
		if vs != nil {
			want = append(want, *vs)
		}
		// The masquerade set keeps its own record, checked against the
		// nftables generation; it needs a sync only when membership changes.
		if (old != nil && old.Masquerade) != (vs != nil && vs.Masquerade) {
			masqChanged = true
		}
		if old == nil {
			// New since the last sync: taken as absent. If another program
			// added it meanwhile, adding it fails (EEXIST) and the next sync
			// reads everything.
			continue
		}
		got, ok, err := v.readService(k)
		if err != nil {
			return err
		}
		if ok {
			got.Masquerade = old.Masquerade
			actual = append(actual, got)
		}
	}
	var bind, unbind []netip.Addr
	for i, k := range keys {
		if i > 0 && keys[i-1].Addr == k.Addr {
			// Sorted by key, so by address first: decided already.
			continue
		}
		inKnown, inDesired := hasAddr(v.known, k.Addr), hasAddr(desired, k.Addr)
		switch {
		case inDesired && !inKnown:
			bind = append(bind, k.Addr)
		case inKnown && !inDesired:
			unbind = append(unbind, k.Addr)
		}
	}
	return v.apply(ctx, dummy, ipvsPlan{bind: bind, unbind: unbind, actual: actual, desired: want, table: desired, masq: masqChanged})
}

// touched returns, sorted, the keys of the services that differ between
// v.known and desired (both sorted by key) and the next verifyWindow
// services of v.known in rotation.
func (v *IPVS) touched(desired []VirtualService) []Key {
	var keys []Key
	i, j := 0, 0
	for i < len(v.known) || j < len(desired) {
		switch {
		case j == len(desired) || i < len(v.known) && compareKeys(v.known[i].Key, desired[j].Key) < 0:
			keys = append(keys, v.known[i].Key)
			i++
		case i == len(v.known) || compareKeys(v.known[i].Key, desired[j].Key) > 0:
			keys = append(keys, desired[j].Key)
			j++
		default:
			if !sameService(&v.known[i], &desired[j]) {
				keys = append(keys, desired[j].Key)
			}
			i++
			j++
		}
	}
	if n := len(v.known); n > 0 {
		for i := range min(verifyWindow, n) {
			keys = append(keys, v.known[(v.cursor+i)%n].Key)
		}
		v.cursor = (v.cursor + verifyWindow) % n
	}
	slices.SortFunc(keys, compareKeys)
	return slices.Compact(keys)
}

// sameService reports whether two prepared services are identical, which
// is cheaper to tell than Diff's answer.
func sameService(a, b *VirtualService) bool {
	if a.Scheduler != b.Scheduler || a.Affinity != b.Affinity || a.Masquerade != b.Masquerade || len(a.Backends) != len(b.Backends) {
		return false
	}
	// prepare hands unchanged services on with the same backends array.
	return len(a.Backends) == 0 || &a.Backends[0] == &b.Backends[0] || slices.Equal(a.Backends, b.Backends)
}

// hasAddr reports whether a table sorted by key has a service on a.
func hasAddr(services []VirtualService, a netip.Addr) bool {
	i, _ := slices.BinarySearchFunc(services, a, func(vs VirtualService, a netip.Addr) int { return vs.Addr.Compare(a) })
	return i < len(services) && services[i].Addr == a
}

// readService reads one service and its destinations from IPVS; ok is
// false when IPVS has no such service.
func (v *IPVS) readService(k Key) (VirtualService, bool, error) {
	s, err := v.ipvs.GetService(toIPVSService(VirtualService{Key: k}))
	if errors.Is(err, unix.ESRCH) {
		return VirtualService{}, false, nil
	}
	if err != nil {
		return VirtualService{}, false, fmt.Errorf("get IPVS service %s: %w", k, err)
	}
	vs, ok := fromIPVSService(s)
	if !ok {
		return VirtualService{}, false, nil
	}
	if err := v.readDestinations(s, &vs); err != nil {
		return VirtualService{}, false, err
	}
	return vs, true, nil
}

func (v *IPVS) readDestinations(s *ipvs.Service, vs *VirtualService) error {
	dests, err := v.ipvs.GetDestinations(s)
	if err != nil {
		return fmt.Errorf("list IPVS destinations of %s: %w", vs.Key, err)
	}
	for _, d := range dests {
		if b, ok := fromIPVSDestination(d); ok {
			vs.Backends = append(vs.Backends, b)
		}
	}
	slices.SortFunc(vs.Backends, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
	return nil
}

// ipvsPlan is what a sync found to do.
type ipvsPlan struct {
	// bind and unbind are the addresses to add to and remove from the
	// dummy interface.
	bind, unbind []netip.Addr
	// actual becomes desired: both sorted by key and covering the same
	// services, the whole table or the services a sync touches.
	actual, desired []VirtualService
	// table is the whole desired table; masq asks for the masquerade set
	// to be synced to it.
	table []VirtualService
	masq  bool
	full  bool
}

func (v *IPVS) apply(ctx context.Context, dummy netlink.Link, p ipvsPlan) error {
	actual, desired := p.actual, p.desired
	// Addresses first: IPVS sees traffic only for local addresses.
	for _, a := range p.bind {
		if err := v.nl.AddrAdd(dummy, hostAddr(a)); errors.Is(err, unix.EEXIST) {
			// Bound by someone else: what we want, but the record was wrong.
			v.readAt = time.Time{}
		} else if err != nil {
			return fmt.Errorf("bind %s on %s: %w", a, v.cfg.Interface, err)
		}
	}
	c := Diff(actual, desired)
	for _, k := range c.Delete {
		v.udp.note(find(actual, k), nil)
	}
	for _, bc := range c.Backends {
		v.udp.note(find(actual, bc.Service), find(desired, bc.Service))
	}
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
	if p.masq {
		var masq []VirtualService
		for _, vs := range p.table {
			if vs.Masquerade {
				masq = append(masq, VirtualService{Key: vs.Key, Scheduler: DefaultScheduler, Masquerade: true})
			}
		}
		if err := v.masq.Sync(ctx, masq); err != nil {
			return fmt.Errorf("masquerade rules: %w", err)
		}
	}
	// Addresses last, once no service uses them.
	for _, a := range p.unbind {
		if err := v.nl.AddrDel(dummy, hostAddr(a)); errors.Is(err, unix.EADDRNOTAVAIL) {
			v.readAt = time.Time{}
		} else if err != nil {
			return fmt.Errorf("unbind %s from %s: %w", a, v.cfg.Interface, err)
		}
	}
	if !c.Empty() {
		v.cfg.Logger.V(1).Info("synced IPVS forwarder", "added", len(c.Add), "updated", len(c.Update),
			"deleted", len(c.Delete), "backendsChanged", len(c.Backends), "fullRead", p.full)
	}
	return nil
}

// read returns ironlb's services in IPVS, read whole: those on a bound or
// wanted address. Masquerade comes from the nftables set.
func (v *IPVS) read(ctx context.Context, bound, wanted map[netip.Addr]bool) ([]VirtualService, error) {
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
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := v.readDestinations(s, &vs); err != nil {
			return nil, err
		}
		out = append(out, vs)
	}
	slices.SortFunc(out, func(a, b VirtualService) int { return compareKeys(a.Key, b.Key) })
	return out, nil
}

package forwarder

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

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
	addrs, err := retryInterrupted(func() ([]netlink.Addr, error) { return v.nl.AddrList(l, netlink.FAMILY_ALL) })
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

// retryInterrupted repeats a netlink dump the kernel marked interrupted
// (NLM_F_DUMP_INTR: the list changed while it was read, as when an IPv6
// address finishes duplicate detection): such a result may miss entries,
// and a sync that trusted it would bind an address twice or not at all.
func retryInterrupted[T any](dump func() ([]T, error)) ([]T, error) {
	const attempts = 5
	for i := 1; ; i++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == attempts {
			return out, err
		}
	}
}

func hostAddr(a netip.Addr) *netlink.Addr {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr
}

// nodeSysctls are what IPVS NAT needs from the node: conntrack for the
// masquerade rule, strictARP's ARP behaviour for the bound addresses, and
// expire_nodest_conn so a connection (a UDP flow above all) whose real
// server was removed is dropped and rescheduled instead of sent to the
// removed server until it times out, as kube-proxy sets it.
var nodeSysctls = []struct{ path, value string }{
	{"/proc/sys/net/ipv4/vs/conntrack", "1"},
	{"/proc/sys/net/ipv4/vs/expire_nodest_conn", "1"},
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
				return sysctlError(s.path, s.value, err)
			}
		}
		return nil
	})
}

// ErrNodeSysctl is returned when a sysctl the IPVS backend needs is not
// set on the node and the speaker cannot set it.
var ErrNodeSysctl = errors.New("node sysctl not set")

// sysctlError names the sysctl as `sysctl` spells it and, when the write
// was refused (container runtimes mount /proc/sys read-only for
// containers that are not privileged), the two ways out.
func sysctlError(path, value string, err error) error {
	name := strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %s=%s: %w; the container cannot write /proc/sys: set it on the node (`sysctl -w %s=%s`, see docs/install.md, Node prerequisites and privileges) or run the speaker with --forwarder=nftables",
			ErrNodeSysctl, name, value, err, name, value)
	}
	return fmt.Errorf("%w: %s=%s: %w", ErrNodeSysctl, name, value, err)
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

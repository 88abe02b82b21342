package forwarder

import (
	"net/netip"
	"time"

	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

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

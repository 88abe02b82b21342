package layer2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// errNotForUs marks a frame the responder ignores (not a request, not for an
// owned address, malformed): the normal case on a busy segment, not an
// error worth logging.
var errNotForUs = errors.New("frame not for an owned address")

var (
	zeroMAC     = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	allNodes    = netip.MustParseAddr("ff02::1")
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
)

const (
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	ndpHopLimit   = 255
	nsMinLen      = 24 // ICMPv6 header, reserved, target
)

// arpReply returns the frame answering an ARP request for an owned address,
// and the address asked for.
func arpReply(frame []byte, hw net.HardwareAddr, owns func(netip.Addr) bool) ([]byte, netip.Addr, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil, netip.Addr{}, errNotForUs
	}
	var req arp.Packet
	if err := req.UnmarshalBinary(f.Payload); err != nil {
		return nil, netip.Addr{}, errNotForUs
	}
	// Our own announcements, should the socket ever see them, are not
	// questions; nor is a request whose hardware addresses are not of our
	// link's kind: no reply to it could be built.
	if req.Operation != arp.OperationRequest || len(req.SenderHardwareAddr) != len(hw) || bytes.Equal(req.SenderHardwareAddr, hw) {
		return nil, netip.Addr{}, errNotForUs
	}
	target := req.TargetIP.Unmap()
	if !owns(target) {
		return nil, netip.Addr{}, errNotForUs
	}
	// A probe (sender 0.0.0.0) or a conflicting announcement gets an
	// answer too, as the kernel gives for its own addresses: it tells the
	// other side that the address is taken.
	p, err := arp.NewPacket(arp.OperationReply, hw, target, req.SenderHardwareAddr, req.SenderIP)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("build ARP reply for %s: %w", target, err)
	}
	out, err := marshalARP(p, f.Source)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	return out, target, nil
}

// gratuitousARP returns the request-form and reply-form announcements of
// addr (see the package comment for why both).
func gratuitousARP(hw net.HardwareAddr, addr netip.Addr) ([][]byte, error) {
	req, err := arp.NewPacket(arp.OperationRequest, hw, addr, zeroMAC, addr)
	if err != nil {
		return nil, fmt.Errorf("build gratuitous ARP request for %s: %w", addr, err)
	}
	rep, err := arp.NewPacket(arp.OperationReply, hw, addr, hw, addr)
	if err != nil {
		return nil, fmt.Errorf("build gratuitous ARP reply for %s: %w", addr, err)
	}
	var out [][]byte
	for _, p := range []*arp.Packet{req, rep} {
		b, err := marshalARP(p, ethernet.Broadcast)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func marshalARP(p *arp.Packet, dst net.HardwareAddr) ([]byte, error) {
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode ARP packet: %w", err)
	}
	f := ethernet.Frame{Destination: dst, Source: p.SenderHardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode ARP frame: %w", err)
	}
	return b, nil
}

// solicitation is a validated Neighbor Solicitation.
type solicitation struct {
	srcMAC net.HardwareAddr // frame source
	src    netip.Addr
	dst    netip.Addr
	target netip.Addr
	srcLL  net.HardwareAddr // source link-layer address option, if any
}

// parseSolicitation decodes and validates (RFC 4861 7.1.1) a Neighbor
// Solicitation inside an Ethernet frame.
func parseSolicitation(frame []byte) (solicitation, error) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeIPv6 {
		return solicitation{}, errNotForUs
	}
	ip := f.Payload
	if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 || ip[6] != protoICMPv6 || ip[7] != ndpHopLimit {
		return solicitation{}, errNotForUs
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if len(ip) < ipv6HeaderLen+plen {
		return solicitation{}, errNotForUs
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	icmp := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if len(icmp) < nsMinLen || ipv6.ICMPType(icmp[0]) != ipv6.ICMPTypeNeighborSolicitation || icmp[1] != 0 {
		return solicitation{}, errNotForUs
	}
	if icmpChecksum(src, dst, icmp) != 0 {
		return solicitation{}, errNotForUs
	}
	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		return solicitation{}, errNotForUs
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress.IsMulticast() {
		return solicitation{}, errNotForUs
	}
	s := solicitation{srcMAC: f.Source, src: src, dst: dst, target: ns.TargetAddress}
	for _, o := range ns.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			s.srcLL = lla.Addr
		}
	}
	if src.IsUnspecified() {
		snm, err := ndp.SolicitedNodeMulticast(ns.TargetAddress)
		if err != nil || dst != snm || s.srcLL != nil {
			return solicitation{}, errNotForUs
		}
	}
	return s, nil
}

// ndpReply returns the Neighbor Advertisement answering an Ethernet frame
// carrying a solicitation for an owned address, and that address.
func ndpReply(frame []byte, hw net.HardwareAddr, src netip.Addr, owns func(netip.Addr) bool) ([]byte, netip.Addr, error) {
	s, err := parseSolicitation(frame)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	if bytes.Equal(s.srcMAC, hw) || !owns(s.target) {
		return nil, netip.Addr{}, errNotForUs
	}
	na := &ndp.NeighborAdvertisement{
		Solicited:     true,
		Override:      true,
		TargetAddress: s.target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: hw}},
	}
	dst, dstMAC := s.src, s.srcLL
	if dstMAC == nil {
		// Unicast probes may omit the option; the frame says who asked.
		dstMAC = s.srcMAC
	}
	if s.src.IsUnspecified() {
		// Someone runs duplicate address detection on our address: tell
		// everyone, unsolicited, that it is taken.
		na.Solicited = false
		dst, dstMAC = allNodes, allNodesMAC
	}
	out, err := marshalNA(na, hw, naSource(src, s.target), dst, dstMAC)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	return out, s.target, nil
}

// unsolicitedNA announces addr to all nodes, overriding cached entries.
func unsolicitedNA(hw net.HardwareAddr, src, addr netip.Addr) ([]byte, error) {
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: addr,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: hw}},
	}
	return marshalNA(na, hw, naSource(src, addr), allNodes, allNodesMAC)
}

func naSource(linkLocal, target netip.Addr) netip.Addr {
	if linkLocal.IsValid() {
		return linkLocal
	}
	return target
}

func marshalNA(na *ndp.NeighborAdvertisement, hw net.HardwareAddr, src, dst netip.Addr, dstMAC net.HardwareAddr) ([]byte, error) {
	src, dst = src.WithZone(""), dst.WithZone("")
	icmp, err := ndp.MarshalMessageChecksum(na, src, dst)
	if err != nil {
		return nil, fmt.Errorf("encode neighbor advertisement for %s: %w", na.TargetAddress, err)
	}
	ip := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(icmp))
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6] = protoICMPv6
	ip[7] = ndpHopLimit
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	ip = append(ip, icmp...)
	f := ethernet.Frame{Destination: dstMAC, Source: hw, EtherType: ethernet.EtherTypeIPv6, Payload: ip}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode neighbor advertisement frame: %w", err)
	}
	return b, nil
}

// icmpChecksum is the ICMPv6 checksum over the pseudo-header and msg; a
// received message with a correct checksum field sums to zero.
func icmpChecksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var pseudo [8]byte
	binary.BigEndian.PutUint32(pseudo[0:4], uint32(len(msg)))
	pseudo[7] = protoICMPv6
	add(pseudo[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

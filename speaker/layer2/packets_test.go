package layer2

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

var (
	ourMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xc8}
	ourLL     = netip.MustParseAddr("fe80::b")
	clientIP  = netip.MustParseAddr("172.25.254.200")
	client6   = netip.MustParseAddr("fd00:254::200")
	vip4      = netip.MustParseAddr("172.25.254.100")
	vip6      = netip.MustParseAddr("fd00:254::100")
	other4    = netip.MustParseAddr("172.25.254.101")
	other6    = netip.MustParseAddr("fd00:254::101")
)

func ownsOnly(addrs ...netip.Addr) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		for _, o := range addrs {
			if a == o {
				return true
			}
		}
		return false
	}
}

// arpView is what a neighbour learns from an ARP frame.
type arpView struct {
	EthDst, EthSrc     string
	Op                 arp.Operation
	SenderHW, TargetHW string
	SenderIP, TargetIP netip.Addr
}

func decodeARP(t *testing.T, b []byte) arpView {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode Ethernet frame: %v", err)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatalf("decode ARP packet: %v", err)
	}
	return arpView{f.Destination.String(), f.Source.String(), p.Operation,
		p.SenderHardwareAddr.String(), p.TargetHardwareAddr.String(), p.SenderIP, p.TargetIP}
}

func arpFrame(t testing.TB, op arp.Operation, srcMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, srcMAC, sender, ethernet.Broadcast, target)
	if err != nil {
		t.Fatal(err)
	}
	b, err := marshalARP(p, ethernet.Broadcast)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestARPReply(t *testing.T) {
	tests := []struct {
		name    string
		frame   func(t *testing.T) []byte
		want    arpView
		wantErr error
	}{
		{
			name:  "request for owned address",
			frame: func(t *testing.T) []byte { return arpFrame(t, arp.OperationRequest, clientMAC, clientIP, vip4) },
			want: arpView{EthDst: clientMAC.String(), EthSrc: ourMAC.String(), Op: arp.OperationReply,
				SenderHW: ourMAC.String(), SenderIP: vip4, TargetHW: clientMAC.String(), TargetIP: clientIP},
		},
		{
			name: "address probe gets an answer",
			frame: func(t *testing.T) []byte {
				return arpFrame(t, arp.OperationRequest, clientMAC, netip.IPv4Unspecified(), vip4)
			},
			want: arpView{EthDst: clientMAC.String(), EthSrc: ourMAC.String(), Op: arp.OperationReply,
				SenderHW: ourMAC.String(), SenderIP: vip4, TargetHW: clientMAC.String(), TargetIP: netip.IPv4Unspecified()},
		},
		{
			name:    "request for an address not owned",
			frame:   func(t *testing.T) []byte { return arpFrame(t, arp.OperationRequest, clientMAC, clientIP, other4) },
			wantErr: errNotForUs,
		},
		{
			name:    "reply is not a question",
			frame:   func(t *testing.T) []byte { return arpFrame(t, arp.OperationReply, clientMAC, clientIP, vip4) },
			wantErr: errNotForUs,
		},
		{
			name:    "own frame",
			frame:   func(t *testing.T) []byte { return arpFrame(t, arp.OperationRequest, ourMAC, vip4, vip4) },
			wantErr: errNotForUs,
		},
		{
			name:    "truncated",
			frame:   func(t *testing.T) []byte { return arpFrame(t, arp.OperationRequest, clientMAC, clientIP, vip4)[:20] },
			wantErr: errNotForUs,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, addr, err := arpReply(tc.frame(t), ourMAC, ownsOnly(vip4))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("arpReply() error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if addr != vip4 {
				t.Errorf("arpReply() address = %v, want %v", addr, vip4)
			}
			if diff := cmp.Diff(tc.want, decodeARP(t, out), addrCmp); diff != "" {
				t.Errorf("reply mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGratuitousARP(t *testing.T) {
	frames, err := gratuitousARP(ourMAC, vip4)
	if err != nil {
		t.Fatal(err)
	}
	var got []arpView
	for _, f := range frames {
		got = append(got, decodeARP(t, f))
	}
	bcast := ethernet.Broadcast.String()
	want := []arpView{
		// RFC 5227 announcement.
		{EthDst: bcast, EthSrc: ourMAC.String(), Op: arp.OperationRequest, SenderHW: ourMAC.String(), SenderIP: vip4, TargetHW: zeroMAC.String(), TargetIP: vip4},
		// Linux counts a reply as gratuitous only with target HW = sender HW.
		{EthDst: bcast, EthSrc: ourMAC.String(), Op: arp.OperationReply, SenderHW: ourMAC.String(), SenderIP: vip4, TargetHW: ourMAC.String(), TargetIP: vip4},
	}
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Errorf("gratuitousARP() mismatch (-want +got):\n%s", diff)
	}
}

// naView is what a neighbour learns from a Neighbor Advertisement frame.
type naView struct {
	EthDst, EthSrc string
	Src, Dst       netip.Addr
	HopLimit       uint8
	ChecksumOK     bool
	Router         bool
	Solicited      bool
	Override       bool
	Target         netip.Addr
	TargetLL       string
}

func decodeNA(t *testing.T, b []byte) naView {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode Ethernet frame: %v", err)
	}
	ip := f.Payload
	if len(ip) < ipv6HeaderLen || ip[6] != protoICMPv6 {
		t.Fatalf("not ICMPv6 over IPv6: % x", ip)
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	icmp := ip[ipv6HeaderLen : ipv6HeaderLen+int(binary.BigEndian.Uint16(ip[4:6]))]
	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		t.Fatalf("parse ICMPv6: %v", err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		t.Fatalf("got %T, want a neighbor advertisement", m)
	}
	v := naView{EthDst: f.Destination.String(), EthSrc: f.Source.String(), Src: src, Dst: dst, HopLimit: ip[7],
		ChecksumOK: icmpChecksum(src, dst, icmp) == 0, Router: na.Router, Solicited: na.Solicited, Override: na.Override, Target: na.TargetAddress}
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			v.TargetLL = lla.Addr.String()
		}
	}
	return v
}

// nsFrame builds a Neighbor Solicitation; mutate may break it afterwards.
func nsFrame(t testing.TB, src, dst, target netip.Addr, withSLLA bool, mutate func(ip []byte)) []byte {
	t.Helper()
	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	if withSLLA {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}
	}
	icmp, err := ndp.MarshalMessageChecksum(ns, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	ip := make([]byte, ipv6HeaderLen)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6], ip[7] = protoICMPv6, ndpHopLimit
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	ip = append(ip, icmp...)
	if mutate != nil {
		mutate(ip)
	}
	dstMAC := net.HardwareAddr{0x33, 0x33, 0xff, 0, 1, 0}
	if !dst.IsMulticast() {
		dstMAC = ourMAC
	}
	b, err := (&ethernet.Frame{Destination: dstMAC, Source: clientMAC, EtherType: ethernet.EtherTypeIPv6, Payload: ip}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func solicitedNode(t testing.TB, a netip.Addr) netip.Addr {
	t.Helper()
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestNDPReply(t *testing.T) {
	snm := solicitedNode(t, vip6)
	reply := naView{EthDst: clientMAC.String(), EthSrc: ourMAC.String(), Src: ourLL, Dst: client6, HopLimit: 255,
		ChecksumOK: true, Solicited: true, Override: true, Target: vip6, TargetLL: ourMAC.String()}
	tests := []struct {
		name      string
		frame     func(t *testing.T) []byte
		linkLocal netip.Addr
		want      naView
		wantErr   error
	}{
		{
			name:      "multicast solicitation",
			frame:     func(t *testing.T) []byte { return nsFrame(t, client6, snm, vip6, true, nil) },
			linkLocal: ourLL,
			want:      reply,
		},
		{
			name: "unicast reachability probe without source link-layer option",
			// Sent to the address itself once the client's entry is stale.
			frame:     func(t *testing.T) []byte { return nsFrame(t, client6, vip6, vip6, false, nil) },
			linkLocal: ourLL,
			want:      reply,
		},
		{
			name:  "interface without link-local answers from the target",
			frame: func(t *testing.T) []byte { return nsFrame(t, client6, snm, vip6, true, nil) },
			want: naView{EthDst: clientMAC.String(), EthSrc: ourMAC.String(), Src: vip6, Dst: client6, HopLimit: 255,
				ChecksumOK: true, Solicited: true, Override: true, Target: vip6, TargetLL: ourMAC.String()},
		},
		{
			name:      "duplicate address detection is told to everyone",
			frame:     func(t *testing.T) []byte { return nsFrame(t, netip.IPv6Unspecified(), snm, vip6, false, nil) },
			linkLocal: ourLL,
			want: naView{EthDst: allNodesMAC.String(), EthSrc: ourMAC.String(), Src: ourLL, Dst: allNodes, HopLimit: 255,
				ChecksumOK: true, Solicited: false, Override: true, Target: vip6, TargetLL: ourMAC.String()},
		},
		{
			name:    "address not owned",
			frame:   func(t *testing.T) []byte { return nsFrame(t, client6, solicitedNode(t, other6), other6, true, nil) },
			wantErr: errNotForUs,
		},
		{
			name:    "hop limit below 255 (not from the link)",
			frame:   func(t *testing.T) []byte { return nsFrame(t, client6, snm, vip6, true, func(ip []byte) { ip[7] = 64 }) },
			wantErr: errNotForUs,
		},
		{
			name: "bad checksum",
			frame: func(t *testing.T) []byte {
				return nsFrame(t, client6, snm, vip6, true, func(ip []byte) { ip[42] ^= 0xff })
			},
			wantErr: errNotForUs,
		},
		{
			name:    "DAD with source link-layer option is invalid",
			frame:   func(t *testing.T) []byte { return nsFrame(t, netip.IPv6Unspecified(), snm, vip6, true, nil) },
			wantErr: errNotForUs,
		},
		{
			name:    "DAD not sent to the solicited-node group",
			frame:   func(t *testing.T) []byte { return nsFrame(t, netip.IPv6Unspecified(), allNodes, vip6, false, nil) },
			wantErr: errNotForUs,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, addr, err := ndpReply(tc.frame(t), ourMAC, tc.linkLocal, ownsOnly(vip6))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ndpReply() error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				return
			}
			if addr != vip6 {
				t.Errorf("ndpReply() address = %v, want %v", addr, vip6)
			}
			if diff := cmp.Diff(tc.want, decodeNA(t, out), addrCmp); diff != "" {
				t.Errorf("advertisement mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnsolicitedNA(t *testing.T) {
	out, err := unsolicitedNA(ourMAC, ourLL, vip6)
	if err != nil {
		t.Fatal(err)
	}
	want := naView{EthDst: allNodesMAC.String(), EthSrc: ourMAC.String(), Src: ourLL, Dst: allNodes, HopLimit: 255,
		ChecksumOK: true, Override: true, Target: vip6, TargetLL: ourMAC.String()}
	if diff := cmp.Diff(want, decodeNA(t, out), addrCmp); diff != "" {
		t.Errorf("unsolicitedNA() mismatch (-want +got):\n%s", diff)
	}
}

// FuzzParseSolicitation feeds arbitrary frames to both responders. The
// seeds are real requests that reach the reply paths (NS multicast and
// unicast, DAD, ARP request and probe) and near misses. Whatever the
// frame: no panic, anything not answered is errNotForUs (never logged as a
// failure), and an answer is a well-formed reply for the owned address it
// names, from our MAC, that the responders would not answer in turn.
func FuzzParseSolicitation(f *testing.F) {
	snm := solicitedNode(f, vip6)
	for _, seed := range [][]byte{
		nsFrame(f, client6, snm, vip6, true, nil),
		nsFrame(f, client6, vip6, vip6, false, nil),
		nsFrame(f, netip.IPv6Unspecified(), snm, vip6, false, nil),
		nsFrame(f, client6, solicitedNode(f, other6), other6, true, nil),
		nsFrame(f, client6, snm, vip6, true, func(ip []byte) { ip[7] = 64 }),
		arpFrame(f, arp.OperationRequest, clientMAC, clientIP, vip4),
		arpFrame(f, arp.OperationRequest, clientMAC, netip.IPv4Unspecified(), vip4),
		arpFrame(f, arp.OperationRequest, clientMAC, clientIP, other4),
		arpFrame(f, arp.OperationReply, clientMAC, clientIP, vip4),
		{},
	} {
		f.Add(seed)
	}
	owns := ownsOnly(vip4, vip6)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, parseErr := parseSolicitation(b)
		out, addr, err := ndpReply(b, ourMAC, ourLL, owns)
		switch {
		case err != nil:
			if !errors.Is(err, errNotForUs) {
				t.Fatalf("ndpReply(% x) = %v, want errNotForUs", b, err)
			}
		case parseErr != nil || s.target != addr || !owns(addr):
			t.Fatalf("ndpReply answered for %v (owned: %v), parseSolicitation target = %v, error %v", addr, owns(addr), s.target, parseErr)
		default:
			na := decodeNA(t, out)
			if na.Target != addr || na.TargetLL != ourMAC.String() || na.EthSrc != ourMAC.String() || !na.ChecksumOK || na.HopLimit != ndpHopLimit {
				t.Fatalf("ndpReply for %v = %+v, want a valid advertisement of it from %v", addr, na, ourMAC)
			}
			if _, err := parseSolicitation(out); err == nil {
				t.Fatalf("ndpReply's own answer parses as a solicitation: % x", out)
			}
		}

		out, addr, err = arpReply(b, ourMAC, owns)
		if err != nil {
			if !errors.Is(err, errNotForUs) {
				t.Fatalf("arpReply(% x) = %v, want errNotForUs", b, err)
			}
			return
		}
		rep := decodeARP(t, out)
		if !owns(addr) || rep.Op != arp.OperationReply || rep.SenderIP != addr || rep.SenderHW != ourMAC.String() || rep.EthSrc != ourMAC.String() {
			t.Fatalf("arpReply for %v = %+v, want a reply from %v for it", addr, rep, ourMAC)
		}
		if _, _, err := arpReply(out, ourMAC, owns); !errors.Is(err, errNotForUs) {
			t.Fatalf("arpReply answers its own reply: %v", err)
		}
	})
}

// addrCmp lets cmp compare netip.Addr, whose fields are unexported.
var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func BenchmarkARPReply(b *testing.B) {
	frame := arpFrame(b, arp.OperationRequest, clientMAC, clientIP, vip4)
	owns := ownsOnly(vip4)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := arpReply(frame, ourMAC, owns); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNDPReply(b *testing.B) {
	frame := nsFrame(b, client6, solicitedNode(b, vip6), vip6, true, nil)
	owns := ownsOnly(vip6)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ndpReply(frame, ourMAC, ourLL, owns); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIgnoredFrame is the cost of a request for someone else's
// address, the common case on a busy segment.
func BenchmarkIgnoredFrame(b *testing.B) {
	frame := arpFrame(b, arp.OperationRequest, clientMAC, clientIP, other4)
	owns := ownsOnly(vip4)
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = arpReply(frame, ourMAC, owns)
	}
}

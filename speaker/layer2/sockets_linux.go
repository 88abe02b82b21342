package layer2

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// Offsets in an untagged Ethernet frame.
const (
	offARPOp      = 14 + 6      // ARP operation
	offIPv6Next   = 14 + 6      // IPv6 next header
	offICMPv6Type = 14 + 40     // ICMPv6 type right after a bare IPv6 header
	snapLen       = 0x4000_0000 // accept whole frame
	arpOpRequest  = 1           // ARP operation code
	nsType        = uint32(135) // ICMPv6 Neighbor Solicitation
)

// The kernel hands the sockets only the frames worth looking at, so a busy
// segment costs no wake-ups for everything else.
var (
	arpFilter = mustAssemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: offARPOp, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arpOpRequest, SkipTrue: 1},
		bpf.RetConstant{Val: snapLen},
		bpf.RetConstant{Val: 0},
	})
	ndpFilter = mustAssemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: offIPv6Next, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 3},
		bpf.LoadAbsolute{Off: offICMPv6Type, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nsType, SkipTrue: 1},
		bpf.RetConstant{Val: snapLen},
		bpf.RetConstant{Val: 0},
	})
)

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(fmt.Sprintf("assemble BPF filter: %v", err))
	}
	return raw
}

// DialConns opens the sockets a Responder needs on ifi: packet sockets for
// ARP and for IPv6 neighbor solicitations, and an ICMPv6 socket through
// which it joins solicited-node groups (it receives nothing: all ICMPv6
// types are filtered out). Needs CAP_NET_RAW.
func DialConns(ifi *net.Interface) (Conns, error) {
	var c Conns
	var err error
	if c.ARP, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: arpFilter}); err != nil {
		return Conns{}, fmt.Errorf("open ARP socket on %q: %w", ifi.Name, err)
	}
	if c.NDP, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeIPv6), &packet.Config{Filter: ndpFilter}); err != nil {
		_ = c.close()
		return Conns{}, fmt.Errorf("open NDP socket on %q: %w", ifi.Name, err)
	}
	g, err := newGroups(ifi)
	if err != nil {
		_ = c.close()
		return Conns{}, err
	}
	c.Groups = g
	c.LinkLocal = linkLocal(ifi)
	return c, nil
}

type groups struct {
	ifi *net.Interface
	pc  *ipv6.PacketConn
}

func newGroups(ifi *net.Interface) (*groups, error) {
	conn, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("open multicast membership socket for %q: %w", ifi.Name, err)
	}
	pc := ipv6.NewPacketConn(conn)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	if err := pc.SetICMPFilter(&f); err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("filter multicast membership socket for %q: %w", ifi.Name, err)
	}
	return &groups{ifi: ifi, pc: pc}, nil
}

func (g *groups) JoinGroup(group netip.Addr) error {
	return g.pc.JoinGroup(g.ifi, &net.IPAddr{IP: group.AsSlice()})
}

func (g *groups) LeaveGroup(group netip.Addr) error {
	return g.pc.LeaveGroup(g.ifi, &net.IPAddr{IP: group.AsSlice()})
}

func (g *groups) Close() error { return g.pc.Close() }

// linkLocal returns ifi's IPv6 link-local address, if it has one.
func linkLocal(ifi *net.Interface) netip.Addr {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

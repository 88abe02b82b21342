package forwarder

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// matchService loads daddr . l4proto . dport of a packet of a's family into
// registers 1.. for a lookup in a service map.
func matchService(a netip.Addr) []expr.Any {
	proto, off, alen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if a.Is6() {
		proto, off, alen = unix.NFPROTO_IPV6, 24, 16
	}
	next := reg32base + alen/4
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

func nativeU32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func l4proto(p Protocol) byte {
	if p == UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// serviceKey encodes k as a services map key: address, protocol and port,
// each padded to a 32-bit register.
func serviceKey(k Key) []byte {
	b := k.Addr.AsSlice()
	b = append(b, l4proto(k.Protocol), 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, k.Port)
	return append(b, 0, 0)
}

func chainName(k Key) string {
	return fmt.Sprintf("%s%s-%s-%d", chainPrefix, k.Addr, strings.ToLower(string(k.Protocol)), k.Port)
}

func backendValue(b Backend) []byte {
	v := b.Addr.AsSlice()
	v = binary.BigEndian.AppendUint16(v, b.Port)
	return append(v, 0, 0)
}

// slot is one entry of a service's backend map.
type slot struct {
	index   uint32
	backend Backend
}

// layout places vs's backends at map indexes: indexes below reachable are
// what the selector picks from; a drained backend (weight 0) sits at an
// index the selector never produces, so a read still finds it.
func layout(vs VirtualService) (slots []slot, reachable uint32) {
	// IPVS's rr and lc only tell weight 0 from the rest.
	weighted := vs.Scheduler != RoundRobin && vs.Scheduler != LeastConnection
	g, sum := 0, 0
	for _, b := range vs.Backends {
		if b.Weight > 0 {
			g = gcd(g, b.Weight)
		}
	}
	counts := make([]int, len(vs.Backends))
	for i, b := range vs.Backends {
		switch {
		case b.Weight <= 0:
		case !weighted:
			counts[i] = 1
		default:
			counts[i] = b.Weight / g
		}
		sum += counts[i]
	}
	if sum > maxSlots {
		for i := range counts {
			if counts[i] > 0 {
				counts[i] = max(1, counts[i]*maxSlots/sum)
			}
		}
	}
	for i, b := range vs.Backends {
		for range counts[i] {
			slots = append(slots, slot{index: reachable, backend: b})
			reachable++
		}
	}
	next := reachable
	for i, b := range vs.Backends {
		if counts[i] == 0 {
			slots = append(slots, slot{index: next, backend: b})
			next++
		}
	}
	return slots, reachable
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Register layout of a service chain's lookup key, in 32-bit registers:
// daddr . l4proto . dport . slot. The selector leaves the slot in place and
// hashes from a register after the key.
type regs struct{ proto, port, slot, scratch uint32 }

func registers(a netip.Addr) regs {
	if a.Is4() {
		return regs{proto: reg32base + 1, port: reg32base + 2, slot: reg32base + 3, scratch: reg32base + 3}
	}
	return regs{proto: reg32base + 4, port: reg32base + 5, slot: reg32base + 6, scratch: reg32base + 8}
}

// selector leaves the index of the chosen slot in r.slot.
func selector(vs VirtualService, modulus uint32, r regs) []expr.Any {
	hashOf := func(source bool) []expr.Any {
		off, alen := uint32(16), uint32(4)
		switch {
		case vs.Addr.Is4() && source:
			off = 12
		case vs.Addr.Is6() && source:
			off, alen = 8, 16
		case vs.Addr.Is6():
			off, alen = 24, 16
		}
		return []expr.Any{
			&expr.Payload{DestRegister: r.scratch, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
			&expr.Hash{SourceRegister: r.scratch, DestRegister: r.slot, Length: alen, Modulus: modulus, Seed: hashSeed, Type: expr.HashTypeJenkins},
		}
	}
	switch {
	case vs.Affinity > 0, vs.Scheduler == SourceHashing, vs.Scheduler == MaglevHashing:
		return hashOf(true)
	case vs.Scheduler == DestinationHashing:
		return hashOf(false)
	case vs.Scheduler == RoundRobin, vs.Scheduler == WeightedRoundRobin:
		return []expr.Any{&expr.Numgen{Register: r.slot, Type: unix.NFT_NG_INCREMENTAL, Modulus: modulus}}
	default:
		return []expr.Any{&expr.Numgen{Register: r.slot, Type: unix.NFT_NG_RANDOM, Modulus: modulus}}
	}
}

// comment records what the kernel's maps cannot say: the scheduler name,
// the affinity timeout, and how many slots the selector picks from (so a
// read can check the map against the rule).
func comment(vs VirtualService, reachable uint32) []byte {
	s := fmt.Sprintf("%s scheduler=%s affinity=%d slots=%d", commentHead, vs.Scheduler, int(vs.Affinity/time.Second), reachable)
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

// parseComment accepts only what comment writes, to the byte: Sscanf alone
// would take signs, leading zeros and trailing text.
func parseComment(ud []byte) (scheduler string, affinity time.Duration, reachable uint32, ok bool) {
	s, ok := commentOf(ud)
	if !ok {
		return "", 0, 0, false
	}
	const format = commentHead + " scheduler=%s affinity=%d slots=%d"
	var secs int
	if _, err := fmt.Sscanf(s, format, &scheduler, &secs, &reachable); err != nil || !schedulers[scheduler] ||
		fmt.Sprintf(format, scheduler, secs, reachable) != s {
		return "", 0, 0, false
	}
	return scheduler, time.Duration(secs) * time.Second, reachable, true
}

// commentOf returns the comment in a rule's user data (type-length-value
// entries). The library's userdata.Get slices before it checks a length,
// so a rule with malformed user data, which any program may add to our
// table, would panic the speaker.
func commentOf(ud []byte) (string, bool) {
	for len(ud) >= 2 {
		typ, n := userdata.Type(ud[0]), int(ud[1])
		if len(ud) < 2+n {
			return "", false
		}
		if typ == userdata.TypeComment {
			return strings.TrimSuffix(string(ud[2:2+n]), "\x00"), true
		}
		ud = ud[2+n:]
	}
	return "", false
}

func backendKey(k Key, index uint32) []byte {
	return append(serviceKey(k), nativeU32(index)...)
}

package forwarder

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// FuzzNFTablesReadBack checks the read side of the nftables backend
// against the write side. From the fuzzer's bytes it builds a virtual
// service, encodes it as writeService does (backend map elements with
// their weight comments, the chain's rules and comment), and requires
// rebuildService to give back exactly that service. It also feeds the raw
// bytes to each decoder: none may panic, and whatever one accepts must
// encode back to the same bytes, since the read trusts only what it could
// have written itself (anything else is stray and removed).
func FuzzNFTablesReadBack(f *testing.F) {
	seeds := []VirtualService{
		{Key: Key{Addr: netip.MustParseAddr("172.25.254.50"), Port: 80, Protocol: TCP}, Scheduler: RoundRobin,
			Backends: []Backend{{Addr: netip.MustParseAddr("10.244.1.5"), Port: 8080, Weight: 1}, {Addr: netip.MustParseAddr("10.244.2.5"), Port: 8080, Weight: 0}}},
		{Key: Key{Addr: netip.MustParseAddr("fd00:254::50"), Port: 53, Protocol: UDP}, Scheduler: WeightedRoundRobin, Affinity: 3 * time.Hour,
			Backends: []Backend{{Addr: netip.MustParseAddr("fd00:10:244:1::5"), Port: 5353, Weight: 3}, {Addr: netip.MustParseAddr("fd00:10:244:2::5"), Port: 5353, Weight: 2}}},
		{Key: Key{Addr: netip.MustParseAddr("172.25.254.51"), Port: 443, Protocol: TCP}, Scheduler: SourceHashing},
	}
	for _, vs := range seeds {
		elems, reachable := backendElements(vs)
		f.Add(vs.Addr.AsSlice(), vs.Port, vs.Protocol == UDP, vs.Scheduler, int64(vs.Affinity/time.Second),
			encodeBackends(vs.Backends), serviceKey(vs.Key), string(comment(vs, reachable)))
		for _, e := range elems {
			f.Add(vs.Addr.AsSlice(), vs.Port, false, "", int64(0), []byte(nil), e.Val, e.Comment)
		}
		f.Add(vs.Addr.AsSlice(), vs.Port, false, "", int64(0), []byte(nil), gotoVerdict(chainName(vs.Key)), "")
	}
	f.Fuzz(func(t *testing.T, addr []byte, port uint16, udp bool, scheduler string, affinitySecs int64, backends []byte, raw []byte, text string) {
		// The decoders on raw kernel data.
		if k, ok := parseServiceKey(raw); ok && !bytes.Equal(serviceKey(k), raw) {
			t.Errorf("parseServiceKey(% x) = %v, which encodes as % x", raw, k, serviceKey(k))
		}
		if b, ok := parseBackend(nftables.SetElement{Val: raw, Comment: text}, len(raw) == 8); ok {
			if v, c := backendValue(b), "w="+strconv.Itoa(b.Weight); !bytes.Equal(v, raw) || c != text {
				t.Errorf("parseBackend(% x, %q) = %+v, which encodes as % x, %q", raw, text, b, v, c)
			}
		}
		for _, ud := range [][]byte{raw, []byte(text), userdata.AppendString(nil, userdata.TypeComment, text)} {
			if s, a, r, ok := parseComment(ud); ok {
				got, _ := commentOf(ud)
				again, _ := commentOf(comment(VirtualService{Scheduler: s, Affinity: a}, r))
				if got != again {
					t.Errorf("parseComment(%q) = %q, %v, %d, which encodes as %q", got, s, a, r, again)
				}
			}
		}
		_ = gotoChain(raw)

		// A service through the write side and back.
		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		vs := VirtualService{Key: Key{Addr: a, Port: port, Protocol: TCP}, Scheduler: scheduler,
			Affinity: time.Duration(affinitySecs) * time.Second, Backends: decodeBackends(backends, a.Unmap().Is4())}
		if udp {
			vs.Protocol = UDP
		}
		prepared, _ := Prepare([]VirtualService{vs})
		if len(prepared) == 0 {
			return
		}
		want := prepared[0]
		elems, reachable := backendElements(want)
		rules := []nftRule{{chain: chainName(want.Key), userData: comment(want, reachable)}}
		if reachable > 0 {
			rules = append([]nftRule{{chain: chainName(want.Key)}}, rules...)
		}
		got, ok := rebuildService(want.Key, chainName(want.Key), rules, elems)
		if !ok {
			t.Fatalf("rebuildService rejects what was written for %+v", want)
		}
		if diff := cmp.Diff(want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("read back (-written +read):\n%s", diff)
		}
	})
}

// encodeBackends and decodeBackends turn backends into fuzzer bytes and
// back: per backend the address (4 or 16 bytes), port and weight (2 each).
func encodeBackends(bs []Backend) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b.Addr.AsSlice()...)
		out = binary.BigEndian.AppendUint16(out, b.Port)
		out = binary.BigEndian.AppendUint16(out, uint16(b.Weight))
	}
	return out
}

func decodeBackends(b []byte, is4 bool) []Backend {
	alen := 16
	if is4 {
		alen = 4
	}
	var out []Backend
	for len(b) >= alen+4 {
		a, _ := netip.AddrFromSlice(b[:alen])
		out = append(out, Backend{Addr: a, Port: binary.BigEndian.Uint16(b[alen:]), Weight: int(binary.BigEndian.Uint16(b[alen+2:]))})
		b = b[alen+4:]
	}
	return out
}

// gotoVerdict is a verdict map element's data for "goto chain", as the
// kernel returns it.
func gotoVerdict(chain string) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	goTo := int32(unix.NFT_GOTO)
	ae.Uint32(unix.NFTA_VERDICT_CODE, uint32(goTo))
	ae.String(unix.NFTA_VERDICT_CHAIN, chain)
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

package forwarder

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftState is what a read found in the kernel.
type nftState struct {
	tableExists bool
	// base says the skeleton (maps, sets, base chains and their rules) is
	// intact; without it the table is rebuilt.
	base     bool
	services []VirtualService
	// strayElements are map entries no valid service accounts for;
	// strayChains are service chains nothing valid points to.
	strayElements []strayElement
	strayChains   []string
}

type strayElement struct {
	set *nftables.Set
	key []byte
}

// nftRule is what a read needs of a rule: where it is and its comment.
type nftRule struct {
	chain    string
	userData []byte
}

// read rebuilds the table from the kernel with a fixed number of dumps,
// whatever its size: chains, sets, all rules of the table, and the
// elements of the maps and sets (four, plus the backends shards).
func (n *NFTables) read(ctx context.Context) (*nftState, error) {
	st := &nftState{}
	tables, err := n.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == n.cfg.Table }) {
		return st, nil
	}
	st.tableExists = true
	t := n.table()
	sets, err := n.conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list nftables sets: %w", err)
	}
	// Exactly the expected sets: a table from a release with another
	// layout is rebuilt rather than half understood.
	want := map[string]bool{}
	for _, s := range n.skeletonSets() {
		want[s.Name] = true
	}
	for _, s := range sets {
		if !want[s.Name] {
			return st, nil
		}
		delete(want, s.Name)
	}
	if len(want) > 0 {
		return st, nil
	}
	chains, err := n.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	present := map[string]bool{}
	for _, c := range chains {
		if c.Table.Name == n.cfg.Table {
			present[c.Name] = true
		}
	}
	rules, err := n.rules()
	if err != nil {
		return nil, err
	}
	byChain := map[string][]nftRule{}
	for _, r := range rules {
		byChain[r.chain] = append(byChain[r.chain], r)
	}
	for name, count := range baseChains {
		if !present[name] || len(byChain[name]) != count {
			return st, nil
		}
	}
	st.base = true
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	masq := map[Key]bool{}
	for _, a := range []netip.Addr{any4, any6} {
		set := n.masqueradeSet(a)
		elems, err := n.conn.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("list nftables set %s: %w", set.Name, err)
		}
		for _, e := range elems {
			k, ok := parseServiceKey(e.Key)
			switch {
			case !ok:
				st.strayElements = append(st.strayElements, strayElement{set, e.Key})
			case n.masqueradeOnly:
				st.services = append(st.services, VirtualService{Key: k, Scheduler: DefaultScheduler, Masquerade: true})
			default:
				masq[k] = true
			}
		}
	}
	valid := map[string]bool{}
	for _, a := range []netip.Addr{any4, any6} {
		slotsOf := map[Key][]nftables.SetElement{}
		for i := range backendShards {
			m := n.backendsShard(a, i)
			backends, err := n.conn.GetSetElements(m)
			if err != nil {
				return nil, fmt.Errorf("list nftables map %s: %w", m.Name, err)
			}
			for _, e := range backends {
				k, ok := parseServiceKey(e.Key[:len(e.Key)-4])
				if !ok || n.masqueradeOnly || shard(k) != i {
					st.strayElements = append(st.strayElements, strayElement{m, e.Key})
					continue
				}
				slotsOf[k] = append(slotsOf[k], e)
			}
		}
		m := n.servicesMap(a)
		elems, err := n.conn.GetSetElements(m)
		if err != nil {
			return nil, fmt.Errorf("list nftables map %s: %w", m.Name, err)
		}
		for _, e := range elems {
			k, ok := parseServiceKey(e.Key)
			if !ok || n.masqueradeOnly {
				st.strayElements = append(st.strayElements, strayElement{m, e.Key})
				continue
			}
			chain := gotoChain(e.Val)
			vs, ok := rebuildService(k, chain, byChain[chain], slotsOf[k])
			if !ok {
				st.strayElements = append(st.strayElements, strayElement{m, e.Key})
				continue
			}
			delete(slotsOf, k)
			vs.Masquerade = masq[k]
			valid[chain] = true
			st.services = append(st.services, vs)
		}
		for k, elems := range slotsOf {
			for _, e := range elems {
				st.strayElements = append(st.strayElements, strayElement{n.backendsMap(k), e.Key})
			}
		}
	}
	for name := range present {
		if strings.HasPrefix(name, chainPrefix) && !valid[name] {
			st.strayChains = append(st.strayChains, name)
		}
	}
	slices.Sort(st.strayChains)
	slices.SortFunc(st.services, func(a, b VirtualService) int { return compareKeys(a.Key, b.Key) })
	return st, nil
}

// rebuildService reassembles a service from its chain's rules and its
// backend map entries, and accepts it only if writing it again would
// produce exactly what the kernel holds.
func rebuildService(k Key, chain string, rules []nftRule, elems []nftables.SetElement) (VirtualService, bool) {
	vs := VirtualService{Key: k}
	if chain != chainName(k) || len(rules) == 0 || len(rules) > 2 {
		return vs, false
	}
	var reachable uint32
	var ok bool
	if vs.Scheduler, vs.Affinity, reachable, ok = parseComment(rules[len(rules)-1].userData); !ok {
		return vs, false
	}
	if (reachable > 0) != (len(rules) == 2) {
		return vs, false
	}
	seen := map[netip.AddrPort]bool{}
	got := map[uint32]Backend{}
	for _, e := range elems {
		b, ok := parseBackend(e, k.Addr.Is4())
		if !ok {
			return vs, false
		}
		got[binary.NativeEndian.Uint32(e.Key[len(e.Key)-4:])] = b
		if !seen[b.AddrPort()] {
			seen[b.AddrPort()] = true
			vs.Backends = append(vs.Backends, b)
		}
	}
	slices.SortFunc(vs.Backends, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
	slots, wantReachable := layout(vs)
	if wantReachable != reachable || len(slots) != len(got) {
		return vs, false
	}
	for _, s := range slots {
		if got[s.index] != s.backend {
			return vs, false
		}
	}
	return vs, true
}

// rules dumps every rule of the table in one request; the library only
// dumps one chain at a time, which costs a request per service.
func (n *NFTables) rules() ([]nftRule, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(n.cfg.Table + "\x00")}})
	if err != nil {
		return nil, err
	}
	msgs, err := n.gen.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, fmt.Errorf("dump nftables rules: %w", err)
	}
	out := make([]nftRule, 0, len(msgs))
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("decode nftables rule: %w", err)
		}
		var r nftRule
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				r.chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				r.userData = ad.Bytes()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("decode nftables rule: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseServiceKey(b []byte) (Key, bool) {
	alen := 0
	switch len(b) {
	case 12:
		alen = 4
	case 24:
		alen = 16
	default:
		return Key{}, false
	}
	// Only what serviceKey writes: the register padding is zero.
	if !zero(b[alen+1:alen+4]) || !zero(b[alen+6:]) {
		return Key{}, false
	}
	addr, _ := netip.AddrFromSlice(b[:alen])
	k := Key{Addr: addr, Port: binary.BigEndian.Uint16(b[alen+4:])}
	switch b[alen] {
	case unix.IPPROTO_TCP:
		k.Protocol = TCP
	case unix.IPPROTO_UDP:
		k.Protocol = UDP
	default:
		return Key{}, false
	}
	return k, true
}

func parseBackend(e nftables.SetElement, is4 bool) (Backend, bool) {
	alen := 16
	if is4 {
		alen = 4
	}
	// Only what backendElements writes: zero padding, and the weight as
	// strconv.Itoa spells it (Atoi alone takes signs and leading zeros).
	if len(e.Val) != alen+4 || !zero(e.Val[alen+2:]) {
		return Backend{}, false
	}
	w, ok := strings.CutPrefix(e.Comment, "w=")
	weight, err := strconv.Atoi(w)
	if !ok || err != nil || weight < 0 || weight > maxWeight || strconv.Itoa(weight) != w {
		return Backend{}, false
	}
	addr, _ := netip.AddrFromSlice(e.Val[:alen])
	return Backend{Addr: addr, Port: binary.BigEndian.Uint16(e.Val[alen:]), Weight: weight}, true
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// gotoChain extracts the chain of a "goto" verdict from a verdict map
// element's data (nested NFTA_VERDICT_* attributes).
func gotoChain(b []byte) string {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	code, chain := uint32(0), ""
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = ad.Uint32()
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || int32(code) != unix.NFT_GOTO {
		return ""
	}
	return chain
}

// generation returns the nftables ruleset generation, which every commit
// by anyone increments.
func (n *NFTables) generation() (uint32, error) {
	msgs, err := n.gen.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("get nftables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("decode nftables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("get nftables generation: no generation in reply")
}

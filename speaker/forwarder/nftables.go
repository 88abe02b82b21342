package forwarder

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NFTables carries virtual services with nftables DNAT, for kernels without
// IPVS. Everything lives in one inet table it owns:
//
//	map services4/services6: daddr . l4proto . dport -> goto svc-<vip>-<proto>-<port>
//	maps backends4-00..backends4-3f, backends6-00..: daddr . l4proto . dport
//	  . slot -> backend addr . port, each service in the shard its key
//	  hashes to
//	set masquerade4/masquerade6: the service keys of services that masquerade
//	chain services: marks masquerade traffic, then looks up the service maps
//	chain prerouting/output (nat, dstnat): jump services
//	chain postrouting (nat, srcnat): masquerade what carries the mark
//	chain svc-...: one per service: numgen or jhash picks a slot, the
//	  service's backends shard gives the DNAT target; then drop (no backend)
//
// A packet costs two hash lookups and one short chain whatever the number
// of services. A sync touches only the services that changed. A replaced
// endpoint changes map elements alone; a new number of endpoints, scheduler
// or affinity rewrites that service's chain too, after which the kernel
// revalidates the table's jumps (a cost that grows with the table).
//
// Why shards: each time a rule in another chain starts using a map, the
// kernel walks every element of that map (to validate jumps, even in a map
// of addresses). With one backends map, loading 10,000 services walked it
// 10,000 times: 27 s against 0.3 s for 1,000. One map per service would
// cost a linear search per message instead (the kernel finds a table's sets
// by name in a list) and a dump per service on every read. A fixed number
// of shards keeps both small: a chain's first use walks 1/64 of the
// backends, and a read is a fixed handful of dumps whatever the table's
// size. (Passing the slot in a register to one shared DNAT chain is not an
// option: the kernel refuses a rule that reads a register it did not write.)
//
// Level-triggered without re-reading 10,000 services on every sync: the
// nftables ruleset generation, which every commit by anyone increments,
// tells whether the kernel still holds what the last sync wrote. When it
// moved by more than our own commits, the table is read back in full and
// whatever someone else changed is repaired.
//
// Differences from IPVS, which users of the scheduler annotation see:
//   - rr: numgen inc over the backends with weight > 0 (weights otherwise
//     ignored, as in IPVS).
//   - wrr: numgen inc over weight slots (each backend weight/gcd times).
//   - lc, wlc, sed, nq: nftables cannot count connections, so these become
//     numgen random; wlc, sed and nq over weight slots, lc over backends.
//   - sh, mh: jhash of the source address over weight slots; dh: jhash of
//     the destination address (one backend per address, as in IPVS).
//   - Affinity (ClientIP) is a jhash of the source address: a client stays
//     on its backend with no timeout, until the backend set changes, which
//     reshuffles clients. IPVS persistence expires after the timeout and
//     moves no client while its entry lives.
//   - Weights enter as slots, weight/gcd per backend, at most 1024 in all
//     (finer ratios are rounded).
//   - Weight 0 keeps a backend in the table without new connections;
//     established connections continue through conntrack, as in IPVS.
//   - Removing a backend does not cut its established flows (conntrack keeps
//     the old translation), like IPVS without expire_nodest_conn.
type NFTables struct {
	cfg  NFTablesConfig
	conn *nftables.Conn
	gen  *netlink.Conn

	mu sync.Mutex
	// cached is the table after our last commit. It stands for what the
	// kernel holds only while the ruleset generation is cachedGen: any
	// commit by anyone bumps the generation and forces a full read.
	cached    []VirtualService
	cachedGen uint32
	cacheOK   bool
	// synced says a sync succeeded: cached is what this forwarder last
	// left in the kernel.
	synced bool
	// masqueradeOnly keeps just the masquerade sets (the IPVS forwarder's
	// companion): no service chains, no DNAT.
	masqueradeOnly bool
	udp            udpFlows
}

// NFTablesConfig configures an NFTables forwarder.
type NFTablesConfig struct {
	// NetNS is an open network namespace file descriptor to program; 0
	// means the caller's namespace.
	NetNS int
	// Table names the inet table ironlb owns (default "ironlb").
	Table string
	// MasqueradeMark is the packet mark bit that asks postrouting to
	// masquerade (default 0x4000, the bit kube-proxy uses for the same
	// purpose, so the two never disagree about a packet).
	MasqueradeMark uint32
	// MaxBatchMessages bounds one nftables transaction (default 10000): the
	// kernel acknowledges every message and the acknowledgements must fit
	// in the socket's receive buffer; fewer, larger transactions load a big
	// table faster since the kernel validates the table once per transaction.
	MaxBatchMessages int
	Logger           logr.Logger
}

const (
	defaultTable          = "ironlb"
	defaultMasqueradeMark = 0x4000
	defaultMaxBatch       = 10000
	socketBuffer          = 16 << 20
	// Slots beyond this are scaled down: a weight ratio finer than 1/1024
	// is not worth a bigger map.
	maxSlots    = 1024
	hashSeed    = 0x1b1b
	commentHead = "ironlb"
	chainPrefix = "svc-"
	// 32-bit register numbers (NFT_REG32_xx) for concatenations.
	reg32base = 8
)

// NewNFTables returns an NFTables forwarder. It touches the kernel only on
// Sync.
func NewNFTables(cfg NFTablesConfig) (*NFTables, error) {
	if cfg.Table == "" {
		cfg.Table = defaultTable
	}
	if cfg.MasqueradeMark == 0 {
		cfg.MasqueradeMark = defaultMasqueradeMark
	}
	if cfg.MaxBatchMessages == 0 {
		cfg.MaxBatchMessages = defaultMaxBatch
	}
	n := &NFTables{cfg: cfg, udp: udpFlows{ns: netns.None()}}
	if cfg.NetNS != 0 {
		n.udp.ns = netns.NsHandle(cfg.NetNS)
	}
	if err := n.dial(); err != nil {
		return nil, err
	}
	gen, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		_ = n.conn.CloseLasting()
		return nil, fmt.Errorf("open nfnetlink: %w", err)
	}
	n.gen = gen
	return n, nil
}

func (n *NFTables) dial() error {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if n.cfg.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.cfg.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("open nftables netlink: %w", err)
	}
	n.conn = conn
	return nil
}

// bigBuffers lets a transaction of MaxBatchMessages and its
// acknowledgements through; without CAP_NET_ADMIN the kernel's limits stay
// and transactions fail loudly rather than silently.
func bigBuffers(c *netlink.Conn) error {
	_ = c.SetOption(netlink.CapAcknowledge, true)
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
	})
}

// Close releases the netlink sockets; the kernel table stays.
func (n *NFTables) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.udp.close()
	return errors.Join(n.conn.CloseLasting(), n.gen.Close())
}

// Sync makes the kernel carry exactly services. Invalid services are left
// out and reported in the returned error; the rest are still applied.
func (n *NFTables) Sync(ctx context.Context, services []VirtualService) error {
	desired, invalid := Prepare(services)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.sync(ctx, desired); err != nil {
		n.cacheOK = false
		// A failed transaction can leave replies unread on the socket;
		// start the next sync on a fresh one.
		_ = n.conn.CloseLasting()
		if derr := n.dial(); derr != nil {
			err = errors.Join(err, derr)
		}
		return errors.Join(err, invalid)
	}
	return invalid
}

// Read returns the virtual services the kernel holds, read from the kernel.
func (n *NFTables) Read(ctx context.Context) ([]VirtualService, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st, err := n.read(ctx)
	if err != nil {
		return nil, err
	}
	return st.services, nil
}

// Delete removes ironlb's table and with it every virtual service.
func (n *NFTables) Delete(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cacheOK = false
	tables, err := n.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == n.cfg.Table {
			n.conn.DelTable(n.table())
			if err := n.conn.Flush(); err != nil {
				return fmt.Errorf("delete nftables table %s: %w", n.cfg.Table, err)
			}
		}
	}
	return nil
}

// Cleanup deletes ironlb's table if it still holds what the last sync
// left; see Cleaner.
func (n *NFTables) Cleanup(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.synced {
		return nil
	}
	if err := n.unchanged(ctx); err != nil {
		return err
	}
	n.synced, n.cacheOK = false, false
	n.conn.DelTable(n.table())
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", n.cfg.Table, err)
	}
	return nil
}

// unchanged returns nil when the kernel's table is what the last sync left:
// either no commit happened since, or the table reads back the same (a
// commit elsewhere in the ruleset bumps the generation too).
func (n *NFTables) unchanged(ctx context.Context) error {
	g, err := n.generation()
	if err != nil {
		return err
	}
	if n.cacheOK && g == n.cachedGen {
		return nil
	}
	st, err := n.read(ctx)
	if err != nil {
		return err
	}
	if !st.base || len(st.strayChains) > 0 || len(st.strayElements) > 0 || !Diff(st.services, n.cached).Empty() {
		return fmt.Errorf("nftables table %s: %w", n.cfg.Table, ErrChangedSinceSync)
	}
	return nil
}

func (n *NFTables) sync(ctx context.Context, desired []VirtualService) error {
	log := n.cfg.Logger
	g0, err := n.generation()
	if err != nil {
		return err
	}
	var st *nftState
	if n.cacheOK && g0 == n.cachedGen {
		st = &nftState{base: true, services: n.cached}
	} else {
		start := time.Now()
		if st, err = n.read(ctx); err != nil {
			return err
		}
		log.V(1).Info("read nftables table", "services", len(st.services), "duration", time.Since(start))
	}
	b := &nftBatch{n: n, max: n.cfg.MaxBatchMessages}
	if !st.base {
		// Something else removed or damaged the skeleton: start over rather
		// than repair piecemeal.
		if st.tableExists {
			n.conn.DelTable(n.table())
		}
		n.addSkeleton()
		st = &nftState{base: true}
	}
	// Elements first: a chain cannot go while a map entry still jumps to it.
	for _, e := range st.strayElements {
		if err := n.conn.SetDeleteElements(e.set, []nftables.SetElement{{Key: e.key}}); err != nil {
			return fmt.Errorf("queue removal of a stray element of %s: %w", e.set.Name, err)
		}
		if err := b.count(1); err != nil {
			return err
		}
	}
	for _, chain := range st.strayChains {
		n.conn.FlushChain(n.chain(chain))
		n.conn.DelChain(n.chain(chain))
		if err := b.count(2); err != nil {
			return err
		}
	}

	changes := Diff(st.services, desired)
	for _, k := range changes.Touched() {
		if err := ctx.Err(); err != nil {
			return err
		}
		old, vs := find(st.services, k), find(desired, k)
		if !n.masqueradeOnly {
			n.udp.note(old, vs)
		}
		msgs := 0
		switch {
		case vs != nil:
			if msgs, err = n.writeService(*vs, old); err != nil {
				return err
			}
		case old != nil:
			if msgs, err = n.deleteService(*old); err != nil {
				return err
			}
		}
		if err := b.count(msgs); err != nil {
			return err
		}
	}
	if err := b.flush(); err != nil {
		return err
	}
	g1, err := n.generation()
	if err != nil {
		return err
	}
	// Our commits were the only ones exactly when the generation moved by
	// their number; otherwise someone else committed too and the next sync
	// must read the kernel.
	n.cacheOK = g1 == g0+uint32(b.commits)
	n.cached, n.cachedGen, n.synced = desired, g1, true
	if err := n.udp.flush(); err != nil {
		// The table is right; the flows are retried on the next sync.
		log.Error(err, "flush conntrack entries of removed UDP backends")
	}
	if !changes.Empty() {
		log.V(1).Info("synced nftables forwarder", "added", len(changes.Add), "updated", len(changes.Update),
			"deleted", len(changes.Delete), "backendsChanged", len(changes.Backends))
	}
	return nil
}

// find returns the service with key k in a slice sorted by key, or nil.
func find(services []VirtualService, k Key) *VirtualService {
	i, ok := slices.BinarySearchFunc(services, k, func(vs VirtualService, k Key) int { return compareKeys(vs.Key, k) })
	if !ok {
		return nil
	}
	return &services[i]
}

// nftBatch splits the queued messages into transactions the socket
// buffers accept. Each transaction leaves every service it touches whole.
type nftBatch struct {
	n        *NFTables
	max      int
	messages int
	commits  int
}

func (b *nftBatch) count(messages int) error {
	b.messages += messages
	if b.messages >= b.max {
		return b.flush()
	}
	return nil
}

func (b *nftBatch) flush() error {
	if b.messages == 0 {
		return nil
	}
	b.messages = 0
	if err := b.n.conn.Flush(); err != nil {
		return fmt.Errorf("commit nftables transaction: %w", err)
	}
	b.commits++
	return nil
}

func (n *NFTables) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: n.cfg.Table}
}

func (n *NFTables) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: n.table()}
}

var (
	serviceKey4 = mustConcat(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	serviceKey6 = mustConcat(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	backendKey4 = mustConcat(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInteger)
	backendKey6 = mustConcat(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeInteger)
	backend4    = mustConcat(nftables.TypeIPAddr, nftables.TypeInetService)
	backend6    = mustConcat(nftables.TypeIP6Addr, nftables.TypeInetService)
)

func mustConcat(types ...nftables.SetDatatype) nftables.SetDatatype {
	t, err := nftables.ConcatSetType(types...)
	if err != nil {
		panic(err)
	}
	return t
}

func (n *NFTables) servicesMap(a netip.Addr) *nftables.Set {
	if a.Is4() {
		return &nftables.Set{Table: n.table(), Name: "services4", IsMap: true, Concatenation: true, KeyType: serviceKey4, DataType: nftables.TypeVerdict}
	}
	return &nftables.Set{Table: n.table(), Name: "services6", IsMap: true, Concatenation: true, KeyType: serviceKey6, DataType: nftables.TypeVerdict}
}

// backendShards is how many backends maps each address family has; see
// the type's comment. Changing it makes the next sync rebuild an existing
// table, since a read accepts only the sets it expects.
const backendShards = 64

// shard returns the backends map shard of a service, a hash of its key.
func shard(k Key) int {
	h := fnv.New32a()
	_, _ = h.Write(serviceKey(k))
	return int(h.Sum32() % backendShards)
}

func (n *NFTables) backendsMap(k Key) *nftables.Set {
	return n.backendsShard(k.Addr, shard(k))
}

func (n *NFTables) backendsShard(a netip.Addr, i int) *nftables.Set {
	if a.Is4() {
		return &nftables.Set{Table: n.table(), Name: fmt.Sprintf("backends4-%02x", i), IsMap: true, Concatenation: true, KeyType: backendKey4, DataType: backend4}
	}
	return &nftables.Set{Table: n.table(), Name: fmt.Sprintf("backends6-%02x", i), IsMap: true, Concatenation: true, KeyType: backendKey6, DataType: backend6}
}

// skeletonSets lists every set and map of an intact table.
func (n *NFTables) skeletonSets() []*nftables.Set {
	var sets []*nftables.Set
	for _, a := range []netip.Addr{any4, any6} {
		sets = append(sets, n.servicesMap(a), n.masqueradeSet(a))
		for i := range backendShards {
			sets = append(sets, n.backendsShard(a, i))
		}
	}
	return sets
}

func (n *NFTables) masqueradeSet(a netip.Addr) *nftables.Set {
	if a.Is4() {
		return &nftables.Set{Table: n.table(), Name: "masquerade4", Concatenation: true, KeyType: serviceKey4}
	}
	return &nftables.Set{Table: n.table(), Name: "masquerade6", Concatenation: true, KeyType: serviceKey6}
}

var (
	any4 = netip.IPv4Unspecified()
	any6 = netip.IPv6Unspecified()
)

// baseChains are the chains of the skeleton and how many rules each holds
// when intact.
var baseChains = map[string]int{"services": 4, "prerouting": 1, "output": 1, "postrouting": 1}

func (n *NFTables) addSkeleton() {
	t := n.conn.AddTable(n.table())
	for _, s := range n.skeletonSets() {
		// Errors from AddSet only concern anonymous sets or bad element
		// lists; these named, empty sets have neither.
		_ = n.conn.AddSet(s, nil)
	}
	services := n.conn.AddChain(&nftables.Chain{Name: "services", Table: t})
	mark := n.cfg.MasqueradeMark
	for _, a := range []netip.Addr{any4, any6} {
		n.conn.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: append(matchService(a),
			&expr.Lookup{SourceRegister: 1, SetName: n.masqueradeSet(a).Name},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(^mark), Xor: nativeU32(mark)},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
		)})
	}
	for _, a := range []netip.Addr{any4, any6} {
		n.conn.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: append(matchService(a),
			&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: n.servicesMap(a).Name},
		)})
	}
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
		c := n.conn.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: h.hook, Priority: nftables.ChainPriorityNATDest})
		n.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "services"}}})
	}
	post := n.conn.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	n.conn.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: nativeU32(mark), Xor: nativeU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: nativeU32(0)},
		&expr.Masq{},
	}})
}

func backendElements(vs VirtualService) ([]nftables.SetElement, uint32) {
	slots, reachable := layout(vs)
	elems := make([]nftables.SetElement, len(slots))
	for i, s := range slots {
		// The weight rides along so a read gives back exactly what was
		// written, whatever the slot arithmetic did to it.
		elems[i] = nftables.SetElement{Key: backendKey(vs.Key, s.index), Val: backendValue(s.backend), Comment: "w=" + strconv.Itoa(s.backend.Weight)}
	}
	return elems, reachable
}

// writeService (re)writes vs's chain and map entries over old, what the
// kernel holds for it (nil if nothing). It returns how many messages it
// queued.
func (n *NFTables) writeService(vs VirtualService, old *VirtualService) (int, error) {
	hadMasq := old != nil && old.Masquerade
	if n.masqueradeOnly {
		return 1, n.setMasquerade(vs, hadMasq)
	}
	msgs := 0
	if old != nil {
		// A map element's comment cannot be updated in place: remove the
		// old slots and add the new ones in the same transaction.
		if elems, _ := backendElements(*old); len(elems) > 0 {
			if err := n.conn.SetDeleteElements(n.backendsMap(vs.Key), elems); err != nil {
				return 0, fmt.Errorf("queue removal of backends of %s: %w", vs.Key, err)
			}
			msgs++
		}
	}
	elems, reachable := backendElements(vs)
	if len(elems) > 0 {
		if err := n.conn.SetAddElements(n.backendsMap(vs.Key), elems); err != nil {
			return 0, fmt.Errorf("queue backends of %s: %w", vs.Key, err)
		}
		msgs++
	}
	// The chain depends only on the selector and the number of slots: a
	// replaced endpoint changes map elements alone. Rewriting a rule makes
	// the kernel revalidate the whole table, which costs in proportion to
	// the table.
	if old == nil || !sameChain(*old, vs) {
		n.writeChain(vs, reachable)
		msgs += 3
	}
	if old == nil {
		if err := n.conn.SetAddElements(n.servicesMap(vs.Addr), []nftables.SetElement{{
			Key: serviceKey(vs.Key), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainName(vs.Key)},
		}}); err != nil {
			return 0, fmt.Errorf("queue service map element of %s: %w", vs.Key, err)
		}
		msgs++
	}
	return msgs + 1, n.setMasquerade(vs, hadMasq)
}

func sameChain(a, b VirtualService) bool {
	_, ra := layout(a)
	_, rb := layout(b)
	return ra == rb && a.Scheduler == b.Scheduler && a.Affinity == b.Affinity
}

func (n *NFTables) writeChain(vs VirtualService, reachable uint32) {
	t := n.table()
	c := n.conn.AddChain(&nftables.Chain{Name: chainName(vs.Key), Table: t})
	n.conn.FlushChain(c)
	if reachable > 0 {
		r := registers(vs.Addr)
		fam := uint32(unix.NFPROTO_IPV4)
		if vs.Addr.Is6() {
			fam = unix.NFPROTO_IPV6
		}
		exprs := selector(vs, reachable, r)
		exprs = append(exprs, matchService(vs.Addr)[2:]...)
		exprs = append(exprs,
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: n.backendsMap(vs.Key).Name},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: r.proto},
		)
		n.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: exprs})
	}
	// Reached when no backend can take the connection.
	n.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}, UserData: comment(vs, reachable)})
}

func (n *NFTables) setMasquerade(vs VirtualService, hadMasq bool) error {
	key := []nftables.SetElement{{Key: serviceKey(vs.Key)}}
	var err error
	switch {
	case vs.Masquerade && !hadMasq:
		err = n.conn.SetAddElements(n.masqueradeSet(vs.Addr), key)
	case !vs.Masquerade && hadMasq:
		err = n.conn.SetDeleteElements(n.masqueradeSet(vs.Addr), key)
	}
	if err != nil {
		return fmt.Errorf("queue masquerade element of %s: %w", vs.Key, err)
	}
	return nil
}

func (n *NFTables) deleteService(vs VirtualService) (int, error) {
	key := []nftables.SetElement{{Key: serviceKey(vs.Key)}}
	if vs.Masquerade {
		if err := n.conn.SetDeleteElements(n.masqueradeSet(vs.Addr), key); err != nil {
			return 0, fmt.Errorf("queue removal of %s: %w", vs.Key, err)
		}
	}
	if n.masqueradeOnly {
		return 1, nil
	}
	if err := n.conn.SetDeleteElements(n.servicesMap(vs.Addr), key); err != nil {
		return 0, fmt.Errorf("queue removal of %s: %w", vs.Key, err)
	}
	if elems, _ := backendElements(vs); len(elems) > 0 {
		if err := n.conn.SetDeleteElements(n.backendsMap(vs.Key), elems); err != nil {
			return 0, fmt.Errorf("queue removal of backends of %s: %w", vs.Key, err)
		}
	}
	c := n.chain(chainName(vs.Key))
	n.conn.FlushChain(c)
	n.conn.DelChain(c)
	return 5, nil
}

// unchangedSinceSync is unchanged for callers outside n.mu.
func (n *NFTables) unchangedSinceSync(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.synced {
		return nil
	}
	return n.unchanged(ctx)
}

package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"go4.org/netipx"
)

// Allocator hands out addresses from pools to services. It is safe for
// concurrent use. See the package documentation for the rules.
type Allocator struct {
	mu       sync.Mutex
	pools    map[string]*pool
	poolList []*pool // sorted by name: the order used when no request order applies
	services map[string]*service
	holdings map[u128]*holding       // by key16, which hashes faster than a netip.Addr
	byKey    map[string][]netip.Addr // held addresses per sharing key, sorted
	orphans  map[string]*service
}

type pool struct {
	name   string
	v4, v6 *space
}

func (p *pool) space(f Family) *space {
	if f == IPv4 {
		return p.v4
	}
	return p.v6
}

func (p *pool) contains(x netip.Addr) bool {
	sp := p.space(FamilyOf(x))
	return sp != nil && sp.contains(u128Of(x))
}

func (p *pool) containsAll(xs []netip.Addr) bool {
	for _, x := range xs {
		if !p.contains(x) {
			return false
		}
	}
	return true
}

type service struct {
	name        string
	pool        string
	addrs       []netip.Addr // in the request's family order
	held        []*holding   // the holding of each of addrs
	ports       []Port       // sorted, unique
	key, compat string
	orphan      bool
	addrBuf     [2]netip.Addr
	heldBuf     [2]*holding
}

// reorder puts the addresses in the order of fams.
func (s *service) reorder(fams []Family) {
	if len(s.addrs) == 2 && FamilyOf(s.addrs[0]) != fams[0] {
		s.addrs[0], s.addrs[1] = s.addrs[1], s.addrs[0]
		s.held[0], s.held[1] = s.held[1], s.held[0]
	}
}

func (s *service) assignment() Assignment {
	return Assignment{Pool: s.pool, Addresses: slices.Clone(s.addrs)}
}

// holding is one held address. All holders share key and compat: that is
// what makes sharing legal, so it is stored once.
type holding struct {
	addr        netip.Addr
	key, compat string
	holders     []*service
	one         [1]*service // backing for the usual single holder
}

// key16 is the holdings key of x: its 16-byte form, so IPv4 and IPv6
// addresses never collide.
func key16(x netip.Addr) u128 { return u128Of(netip.AddrFrom16(x.As16())) }

func (h *holding) names(except string) []string {
	var n []string
	for _, s := range h.holders {
		if s.name != except {
			n = append(n, s.name)
		}
	}
	slices.Sort(n)
	return n
}

// request is a validated, normalized Request.
type request struct {
	svc         string
	fams        []Family
	mustAll     bool
	addrs       []netip.Addr // in fams order
	pools       []*pool
	ports       []Port
	key, compat string
}

// New returns an allocator with no pools.
func New() *Allocator {
	return &Allocator{
		pools:    map[string]*pool{},
		services: map[string]*service{},
		holdings: map[u128]*holding{},
		byKey:    map[string][]netip.Addr{},
		orphans:  map[string]*service{},
	}
}

// SetPools replaces the pool set. Assignments stay, even those whose
// addresses left every pool: those services are returned (sorted, together
// with services orphaned earlier and still orphaned) so the caller can decide
// what to do; their addresses stay held until they are released or allocated
// anew. A pool whose ranges and AvoidBuggyIPs did not change keeps its state:
// resubmitting the same pools costs O(pools + orphans). A new or changed
// pool costs one pass over the held addresses, and a changed or removed one a
// pass over the services. Duplicate pool names: the first wins.
func (a *Allocator) SetPools(pools []Pool) (orphans []string) {
	a.mu.Lock()
	defer a.mu.Unlock()

	next := make(map[string]*pool, len(pools))
	var fresh []*space
	unchanged := map[string]bool{}
	for _, pc := range pools {
		if _, dup := next[pc.Name]; dup {
			continue
		}
		p := buildPool(pc)
		if old := a.pools[pc.Name]; old != nil && sameSpace(old.v4, p.v4) && sameSpace(old.v6, p.v6) {
			p = old
			unchanged[p.name] = true
		} else {
			for _, sp := range []*space{p.v4, p.v6} {
				if sp != nil {
					fresh = append(fresh, sp)
				}
			}
		}
		next[pc.Name] = p
	}
	old := a.pools
	a.pools = next
	a.poolList = a.poolList[:0]
	for _, p := range next {
		a.poolList = append(a.poolList, p)
	}
	slices.SortFunc(a.poolList, func(x, y *pool) int { return strings.Compare(x.name, y.name) })

	if len(fresh) > 0 {
		for _, h := range a.holdings {
			u, f := u128Of(h.addr), FamilyOf(h.addr)
			for _, sp := range fresh {
				if sp.fam == f && sp.contains(u) {
					sp.mark(u)
				}
			}
		}
	}

	// Services of unchanged pools stay where they are; when no pool changed
	// or went away, only orphans can have found a pool again.
	movedOut := false
	for name := range old {
		movedOut = movedOut || !unchanged[name]
	}
	check := a.orphans
	if movedOut {
		check = a.services
	}
	for _, s := range check {
		if !s.orphan && unchanged[s.pool] {
			continue
		}
		a.placeService(s)
	}
	for name := range a.orphans {
		orphans = append(orphans, name)
	}
	slices.Sort(orphans)
	return orphans
}

// placeService finds the pool of a service after a pool change: its own if
// it still holds all its addresses, else the first by name that does.
func (a *Allocator) placeService(s *service) {
	p := a.pools[s.pool]
	if p == nil || !p.containsAll(s.addrs) {
		p = nil
		for _, q := range a.poolList {
			if q.containsAll(s.addrs) {
				p = q
				break
			}
		}
	}
	if p == nil {
		s.orphan = true
		a.orphans[s.name] = s
		return
	}
	s.pool, s.orphan = p.name, false
	delete(a.orphans, s.name)
}

func sameSpace(a, b *space) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.sameShape(b)
}

func buildPool(pc Pool) *pool {
	var b netipx.IPSetBuilder
	for _, r := range pc.Ranges {
		from, to := r.From(), r.To()
		if from.Is4In6() && to.Is4In6() {
			r = netipx.IPRangeFrom(from.Unmap(), to.Unmap())
		}
		if r.IsValid() {
			b.AddRange(r)
		}
	}
	set, _ := b.IPSet() // only ever fails on invalid input, which is skipped
	var v4, v6 []span
	for _, r := range set.Ranges() {
		sp := span{u128Of(r.From()), u128Of(r.To())}
		if r.From().Is4() {
			v4 = append(v4, sp)
		} else {
			v6 = append(v6, sp)
		}
	}
	p := &pool{name: pc.Name}
	if len(v4) > 0 {
		p.v4 = newSpace(IPv4, v4, pc.AvoidBuggyIPs)
	}
	if len(v6) > 0 {
		p.v6 = newSpace(IPv6, v6, pc.AvoidBuggyIPs)
	}
	return p
}

// Allocate gives the service addresses for req. If the service already holds
// an assignment that still satisfies req, that assignment is returned
// unchanged. Otherwise the old assignment is released (even if the new
// allocation then fails) and a new one made.
func (a *Allocator) Allocate(req Request) (Assignment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var r request
	err := a.normalize(req, &r)
	if err != nil {
		return Assignment{}, err
	}
	if len(r.addrs) > 0 && r.mustAll && len(r.addrs) < len(r.fams) {
		return Assignment{}, fmt.Errorf("request %s: the service requires %s: %w",
			joinAddrs(r.addrs), famWord(r.fams), ErrFamilyUnavailable)
	}
	if cur := a.services[r.svc]; cur != nil {
		if a.satisfies(cur, &r, r.addrs) {
			a.refresh(cur, &r)
			return cur.assignment(), nil
		}
		a.release(cur)
	}
	var p *pool
	addrs := r.addrs
	if len(addrs) > 0 {
		p, err = a.planRequested(&r, addrs, "request")
	} else {
		p, addrs, err = a.planAuto(&r)
	}
	if err != nil {
		return Assignment{}, err
	}
	return a.commit(&r, p, addrs).assignment(), nil
}

// Assign restores an assignment observed earlier (a Service's status after a
// restart). It succeeds if addrs lie in one configured pool the request
// admits, match the request's families and requested addresses, and are free
// or legally shared; the candidate pool order plays no part.
func (a *Allocator) Assign(req Request, addrs []netip.Addr) (Assignment, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var r request
	err := a.normalize(req, &r)
	if err != nil {
		return Assignment{}, err
	}
	want, err := normalizeAddrs(addrs, r.fams, "restore")
	if err != nil {
		return Assignment{}, err
	}
	if len(want) == 0 {
		return Assignment{}, fmt.Errorf("restore: no address given: %w", ErrInvalidRequest)
	}
	if len(r.addrs) > 0 && !sameSet(r.addrs, want) {
		return Assignment{}, fmt.Errorf("restore %s: the service requests %s: %w",
			joinAddrs(want), joinAddrs(r.addrs), ErrMismatch)
	}
	if r.mustAll && len(want) < len(r.fams) {
		return Assignment{}, fmt.Errorf("restore %s: the service requires %s: %w",
			joinAddrs(want), famWord(r.fams), ErrMismatch)
	}
	if cur := a.services[r.svc]; cur != nil {
		if a.satisfies(cur, &r, want) {
			a.refresh(cur, &r)
			return cur.assignment(), nil
		}
		a.release(cur)
	}
	p, err := a.planRequested(&r, want, "restore")
	if err != nil {
		return Assignment{}, err
	}
	return a.commit(&r, p, want).assignment(), nil
}

// Release frees the service's addresses (shared addresses stay with their
// other holders). It reports whether the service held anything.
func (a *Allocator) Release(service string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.services[service]
	if s == nil {
		return false
	}
	a.release(s)
	return true
}

// Assigned returns the service's current assignment.
func (a *Allocator) Assigned(service string) (Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.services[service]
	if s == nil {
		return Assignment{}, false
	}
	return s.assignment(), true
}

// Holders returns the services holding addr, sorted.
func (a *Allocator) Holders(addr netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.holdings[key16(addr.Unmap().WithZone(""))]
	if h == nil {
		return nil
	}
	return h.names("")
}

// Orphans returns the services whose addresses are not all inside one
// configured pool, sorted.
func (a *Allocator) Orphans() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var n []string
	for name := range a.orphans {
		n = append(n, name)
	}
	slices.Sort(n)
	return n
}

// Stats counts the pool's assigned and available addresses; an unknown pool
// has all zero counts.
func (a *Allocator) Stats(pool string) PoolStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	var st PoolStats
	p := a.pools[pool]
	if p == nil {
		return st
	}
	if sp := p.v4; sp != nil {
		st.AssignedIPv4 = sp.nUsed
		st.AvailableIPv4 = sp.nTotal.sub(u128{lo: sp.nUsed}).sat64()
	}
	if sp := p.v6; sp != nil {
		st.AssignedIPv6 = sp.nUsed
		st.AvailableIPv6 = sp.nTotal.sub(u128{lo: sp.nUsed}).sat64()
	}
	return st
}

// normalize validates req into r.
func (a *Allocator) normalize(req Request, r *request) error {
	*r = request{svc: req.Service, key: req.SharingKey, compat: req.Compat}
	if req.Service == "" {
		return fmt.Errorf("allocate: no service key: %w", ErrInvalidRequest)
	}
	if len(req.Families) == 0 || len(req.Families) > 2 {
		return fmt.Errorf("allocate for %q: %d families given, want 1 or 2: %w", req.Service, len(req.Families), ErrInvalidRequest)
	}
	for _, f := range req.Families {
		if f != IPv4 && f != IPv6 {
			return fmt.Errorf("allocate for %q: unknown family %v: %w", req.Service, f, ErrInvalidRequest)
		}
	}
	if len(req.Families) == 2 && req.Families[0] == req.Families[1] {
		return fmt.Errorf("allocate for %q: family %v given twice: %w", req.Service, req.Families[0], ErrInvalidRequest)
	}
	r.fams = req.Families
	r.mustAll = req.RequireAll || len(r.fams) == 1
	if len(req.Pools) > 0 {
		r.pools = make([]*pool, 0, len(req.Pools))
	}
	var err error
	if r.addrs, err = normalizeAddrs(req.Addresses, r.fams, "request"); err != nil {
		return err
	}
	for _, name := range req.Pools {
		p := a.pools[name]
		if p == nil {
			return fmt.Errorf("allocate from pool %q: %w", name, ErrUnknownPool)
		}
		if !slices.Contains(r.pools, p) {
			r.pools = append(r.pools, p)
		}
	}
	r.ports = make([]Port, 0, len(req.Ports))
	for _, p := range req.Ports {
		p.Protocol = strings.ToUpper(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		r.ports = append(r.ports, p)
	}
	slices.SortFunc(r.ports, func(x, y Port) int {
		return cmp.Or(strings.Compare(x.Protocol, y.Protocol), cmp.Compare(x.Port, y.Port))
	})
	r.ports = slices.Compact(r.ports)
	return nil
}

// normalizeAddrs unmaps addrs, drops duplicates, checks there is at most one
// per family and only wanted families, and orders them as fams.
func normalizeAddrs(addrs []netip.Addr, fams []Family, op string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, x := range addrs {
		if !x.IsValid() {
			return nil, fmt.Errorf("%s: invalid address: %w", op, ErrInvalidRequest)
		}
		x = x.Unmap().WithZone("")
		if slices.Contains(out, x) {
			continue
		}
		f := FamilyOf(x)
		if !slices.Contains(fams, f) {
			sentinel := ErrInvalidRequest
			if op == "restore" {
				sentinel = ErrMismatch
			}
			return nil, fmt.Errorf("%s %s: the service has no %v family: %w", op, x, f, sentinel)
		}
		for _, y := range out {
			if FamilyOf(y) == f {
				return nil, fmt.Errorf("%s %s and %s: at most one address per family: %w", op, y, x, ErrInvalidRequest)
			}
		}
		out = append(out, x)
	}
	orderByFamily(out, fams)
	return out, nil
}

func orderByFamily(addrs []netip.Addr, fams []Family) {
	if len(addrs) == 2 && FamilyOf(addrs[0]) != fams[0] {
		addrs[0], addrs[1] = addrs[1], addrs[0]
	}
}

func sameSet(x, y []netip.Addr) bool {
	if len(x) != len(y) {
		return false
	}
	for _, v := range x {
		if !slices.Contains(y, v) {
			return false
		}
	}
	return true
}

// satisfies reports whether the service's current assignment still fits r
// (and equals want, when given).
func (a *Allocator) satisfies(cur *service, r *request, want []netip.Addr) bool {
	if cur.orphan {
		return false
	}
	p := a.pools[cur.pool]
	if p == nil || (len(r.pools) > 0 && !slices.Contains(r.pools, p)) {
		return false
	}
	if len(want) > 0 && !sameSet(cur.addrs, want) {
		return false
	}
	for _, x := range cur.addrs {
		if !slices.Contains(r.fams, FamilyOf(x)) {
			return false
		}
	}
	if r.mustAll && len(cur.addrs) != len(r.fams) {
		return false
	}
	for _, h := range cur.held {
		if a.conflictAt(h, r) != nil {
			return false
		}
	}
	return true
}

// refresh records r's ports, key and compat on a service whose assignment
// satisfies r (so any change of key or compat is on addresses it holds alone).
func (a *Allocator) refresh(s *service, r *request) {
	s.reorder(r.fams)
	s.ports = r.ports
	if s.key == r.key && s.compat == r.compat {
		return
	}
	for _, h := range s.held {
		if h.key != r.key {
			a.unindexKey(h.key, h.addr)
			h.key = r.key
			a.indexKey(h.key, h.addr)
		}
		h.compat = r.compat
	}
	s.key, s.compat = r.key, r.compat
}

func (a *Allocator) commit(r *request, p *pool, addrs []netip.Addr) *service {
	s := &service{
		name:   r.svc,
		pool:   p.name,
		ports:  r.ports,
		key:    r.key,
		compat: r.compat,
	}
	s.addrs = append(s.addrBuf[:0], addrs...)
	s.held = s.heldBuf[:0]
	for _, x := range s.addrs {
		k := key16(x)
		h := a.holdings[k]
		if h == nil {
			h = &holding{addr: x, key: s.key, compat: s.compat}
			h.holders = h.one[:0]
			a.holdings[k] = h
			a.markAll(x)
			a.indexKey(h.key, x)
		}
		h.holders = append(h.holders, s)
		s.held = append(s.held, h)
	}
	a.services[s.name] = s
	return s
}

func (a *Allocator) release(s *service) {
	for i, x := range s.addrs {
		h := s.held[i]
		if j := slices.Index(h.holders, s); j >= 0 {
			h.holders = slices.Delete(h.holders, j, j+1)
		}
		if len(h.holders) == 0 {
			delete(a.holdings, key16(x))
			a.unmarkAll(x)
			a.unindexKey(h.key, x)
		}
	}
	delete(a.services, s.name)
	delete(a.orphans, s.name)
}

// markAll records x as held in every pool containing it: pools should not
// overlap, but if they do, both count it and neither hands it out again.
func (a *Allocator) markAll(x netip.Addr) {
	u, f := u128Of(x), FamilyOf(x)
	for _, p := range a.poolList {
		if sp := p.space(f); sp != nil && sp.contains(u) {
			sp.mark(u)
		}
	}
}

func (a *Allocator) unmarkAll(x netip.Addr) {
	u, f := u128Of(x), FamilyOf(x)
	for _, p := range a.poolList {
		if sp := p.space(f); sp != nil && sp.contains(u) {
			sp.unmark(u)
		}
	}
}

func (a *Allocator) indexKey(key string, x netip.Addr) {
	if key == "" {
		return
	}
	l := a.byKey[key]
	i, found := slices.BinarySearchFunc(l, x, netip.Addr.Compare)
	if !found {
		a.byKey[key] = slices.Insert(l, i, x)
	}
}

func (a *Allocator) unindexKey(key string, x netip.Addr) {
	if key == "" {
		return
	}
	l := a.byKey[key]
	if i, found := slices.BinarySearchFunc(l, x, netip.Addr.Compare); found {
		l = slices.Delete(l, i, i+1)
	}
	if len(l) == 0 {
		delete(a.byKey, key)
	} else {
		a.byKey[key] = l
	}
}

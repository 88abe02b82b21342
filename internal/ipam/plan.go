package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// planRequested finds the pool for specific addresses and checks they may be
// held by r's service.
func (a *Allocator) planRequested(r *request, want []netip.Addr, op string) (*pool, error) {
	cands := r.pools
	if len(cands) == 0 {
		cands = a.poolList
	}
	var chosen *pool
	for _, p := range cands {
		if p.containsAll(want) {
			chosen = p
			break
		}
	}
	if chosen == nil {
		return nil, a.whyNoPool(r, want, op)
	}
	for _, x := range want {
		if err := a.conflict(x, r); err != nil {
			return nil, err
		}
	}
	return chosen, nil
}

func (a *Allocator) whyNoPool(r *request, want []netip.Addr, op string) error {
	var where []string
	for _, x := range want {
		var in, buggyIn []string
		for _, p := range a.poolList {
			if p.contains(x) {
				in = append(in, p.name)
			} else if sp := p.space(FamilyOf(x)); sp != nil && sp.avoid {
				if i := sp.spanAtOrAfter(u128Of(x)); i < len(sp.spans) && !u128Of(x).less(sp.spans[i].lo) {
					buggyIn = append(buggyIn, p.name)
				}
			}
		}
		if len(in) == 0 {
			hint := ""
			if len(buggyIn) > 0 {
				hint = fmt.Sprintf(" (%s avoids addresses ending in .0 and .255)", poolWord(buggyIn))
			}
			return fmt.Errorf("%s %s%s: %w", op, x, hint, ErrNotInAnyPool)
		}
		if len(r.pools) > 0 {
			allowed := false
			for _, p := range r.pools {
				allowed = allowed || p.contains(x)
			}
			if !allowed {
				return fmt.Errorf("%s %s from %s (the service may use %s): %w",
					op, x, poolWord(in), quoteList(poolNames(r.pools)), ErrPoolNotAllowed)
			}
		}
		where = append(where, fmt.Sprintf("%s in %s", x, poolWord(in)))
	}
	return fmt.Errorf("%s %s: not in one pool (%s): %w", op, joinAddrs(want), strings.Join(where, ", "), ErrNotInAnyPool)
}

// option is what one candidate pool can give an automatic request.
type option struct {
	pool   *pool
	idx    int
	addrs  [2]netip.Addr // by family index
	ok     [2]bool
	served int
	shares bool
}

// better ranks options: sharing an address with the same key first (that is
// what the key asks for), then more families, then the preferred family,
// then pool order.
func (o *option) better(b *option) bool {
	if o.shares != b.shares {
		return o.shares
	}
	if o.served != b.served {
		return o.served > b.served
	}
	if o.ok[0] != b.ok[0] {
		return o.ok[0]
	}
	return o.idx < b.idx
}

func (a *Allocator) planAuto(r *request) (*pool, []netip.Addr, error) {
	if len(r.pools) == 0 {
		return nil, nil, fmt.Errorf("allocate %s: %w", famWord(r.fams), ErrNoPool)
	}
	var keyAddrs []netip.Addr
	if r.key != "" {
		keyAddrs = a.byKey[r.key]
	}
	var best option
	found := false
	for i, p := range r.pools {
		o := option{pool: p, idx: i}
		for j, f := range r.fams {
			sp := p.space(f)
			if sp == nil {
				continue
			}
			for _, x := range keyAddrs {
				if FamilyOf(x) == f && sp.contains(u128Of(x)) && a.conflict(x, r) == nil {
					o.addrs[j], o.ok[j], o.shares = x, true, true
					break
				}
			}
			if o.ok[j] {
				continue
			}
			if v, ok := sp.lowestFree(); ok {
				o.addrs[j], o.ok[j] = v.addr(f), true
			}
		}
		for _, ok := range o.ok {
			if ok {
				o.served++
			}
		}
		if o.served == 0 || (r.mustAll && o.served < len(r.fams)) {
			continue
		}
		if !found || o.better(&best) {
			best, found = o, true
		}
		if best.served == len(r.fams) && (best.shares || len(keyAddrs) == 0) {
			break // nothing later can rank higher
		}
	}
	if !found {
		return nil, nil, a.whyExhausted(r)
	}
	var addrs []netip.Addr
	for j := range r.fams {
		if best.ok[j] {
			addrs = append(addrs, best.addrs[j])
		}
	}
	return best.pool, addrs, nil
}

func (a *Allocator) whyExhausted(r *request) error {
	names := poolNames(r.pools)
	offered := false
	for _, p := range r.pools {
		n := 0
		for _, f := range r.fams {
			if p.space(f) != nil {
				n++
			}
		}
		if n == len(r.fams) || (!r.mustAll && n > 0) {
			offered = true
			break
		}
	}
	if !offered {
		var why string
		switch {
		case len(r.fams) == 1:
			why = fmt.Sprintf("%s %s no %v range", poolWord(names), hasWord(names), r.fams[0])
		case r.mustAll && len(names) == 1:
			why = fmt.Sprintf("%s does not have both %v and %v ranges", poolWord(names), r.fams[0], r.fams[1])
		case r.mustAll:
			why = fmt.Sprintf("none of %s has both %v and %v ranges", poolWord(names), r.fams[0], r.fams[1])
		default:
			why = fmt.Sprintf("%s %s neither %v nor %v ranges", poolWord(names), hasWord(names), r.fams[0], r.fams[1])
		}
		return fmt.Errorf("allocate %s: %s: %w", famWord(r.fams), why, ErrFamilyUnavailable)
	}
	return fmt.Errorf("allocate %s from %s: %w", famWord(r.fams), poolWord(names), ErrPoolExhausted)
}

func hasWord(names []string) string {
	if len(names) == 1 {
		return "has"
	}
	return "have"
}

func famWord(fams []Family) string {
	if len(fams) == 2 {
		return fams[0].String() + " and " + fams[1].String()
	}
	return fams[0].String()
}

func joinAddrs(xs []netip.Addr) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, " and ")
}

func poolNames(ps []*pool) []string {
	n := make([]string, len(ps))
	for i, p := range ps {
		n[i] = p.name
	}
	return n
}

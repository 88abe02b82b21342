package forwarder

import (
	"net/netip"
	"slices"
)

// Changes is what it takes to turn one table into another. Its size is
// proportional to the difference, not to the tables.
type Changes struct {
	// Add lists services the kernel lacks, with all their backends.
	Add []VirtualService
	// Update lists kept services whose own settings (scheduler, affinity,
	// masquerade) differ, in their desired form. Backends are in Backends.
	Update []VirtualService
	// Delete lists services to remove with everything behind them.
	Delete []Key
	// Backends lists kept services whose backends differ.
	Backends []BackendChanges
}

// BackendChanges is the backend difference of one kept service.
type BackendChanges struct {
	Service Key
	Add     []Backend
	// Update holds backends whose weight changed, with the desired weight.
	Update []Backend
	Delete []Backend
}

// Empty reports whether the tables were already equal.
func (c Changes) Empty() bool {
	return len(c.Add) == 0 && len(c.Update) == 0 && len(c.Delete) == 0 && len(c.Backends) == 0
}

// Touched lists, sorted, every service that is added, removed, or changes in
// any way: the services a backend that rewrites whole services must rewrite.
func (c Changes) Touched() []Key {
	keys := make([]Key, 0, len(c.Add)+len(c.Update)+len(c.Delete)+len(c.Backends))
	for _, vs := range c.Add {
		keys = append(keys, vs.Key)
	}
	for _, vs := range c.Update {
		keys = append(keys, vs.Key)
	}
	keys = append(keys, c.Delete...)
	for _, b := range c.Backends {
		keys = append(keys, b.Service)
	}
	slices.SortFunc(keys, compareKeys)
	return slices.Compact(keys)
}

// Diff computes the changes that turn actual into desired. Services are
// matched by Key, backends by address and port. It is pure and does not
// modify its inputs; each result list follows the order of its input.
// Inputs sorted by key (Prepare's order) take a faster path.
func Diff(actual, desired []VirtualService) Changes {
	byKey := func(a, b VirtualService) int { return compareKeys(canonicalKey(a.Key), canonicalKey(b.Key)) }
	if slices.IsSortedFunc(actual, byKey) && slices.IsSortedFunc(desired, byKey) {
		return diffSorted(actual, desired)
	}
	var c Changes
	have := make(map[Key]*VirtualService, len(actual))
	for i := range actual {
		have[canonicalKey(actual[i].Key)] = &actual[i]
	}
	want := make(map[Key]bool, len(desired))
	for i := range desired {
		d := &desired[i]
		k := canonicalKey(d.Key)
		want[k] = true
		if a, ok := have[k]; ok {
			c.compare(a, d)
		} else {
			c.Add = append(c.Add, *d)
		}
	}
	for i := range actual {
		if k := canonicalKey(actual[i].Key); !want[k] {
			c.Delete = append(c.Delete, k)
		}
	}
	return c
}

// diffSorted is Diff for inputs sorted by key, as Prepare and the backends'
// reads return them: a merge, with no maps to build on every sync.
func diffSorted(actual, desired []VirtualService) Changes {
	var c Changes
	i, j := 0, 0
	for i < len(actual) || j < len(desired) {
		var order int
		switch {
		case i == len(actual):
			order = 1
		case j == len(desired):
			order = -1
		default:
			order = compareKeys(canonicalKey(actual[i].Key), canonicalKey(desired[j].Key))
		}
		switch {
		case order < 0:
			c.Delete = append(c.Delete, canonicalKey(actual[i].Key))
			i++
		case order > 0:
			c.Add = append(c.Add, desired[j])
			j++
		default:
			c.compare(&actual[i], &desired[j])
			i++
			j++
		}
	}
	return c
}

func (c *Changes) compare(a, d *VirtualService) {
	if !sameSettings(*a, *d) {
		c.Update = append(c.Update, *d)
	}
	if bc, changed := diffBackends(canonicalKey(d.Key), a.Backends, d.Backends); changed {
		c.Backends = append(c.Backends, bc)
	}
}

func canonicalKey(k Key) Key {
	k.Addr = k.Addr.Unmap()
	return k
}

func schedulerName(s string) string {
	if s == "" {
		return DefaultScheduler
	}
	return s
}

func sameSettings(a, b VirtualService) bool {
	return schedulerName(a.Scheduler) == schedulerName(b.Scheduler) &&
		a.Affinity.Truncate(affinityGranularity) == b.Affinity.Truncate(affinityGranularity) &&
		a.Masquerade == b.Masquerade
}

func diffBackends(k Key, actual, desired []Backend) (BackendChanges, bool) {
	// Fast path for the common case: nothing changed and both sides are in
	// the same (canonical) order.
	if slices.EqualFunc(actual, desired, func(a, b Backend) bool {
		return a.AddrPort() == b.AddrPort() && a.Weight == b.Weight
	}) {
		return BackendChanges{}, false
	}
	bc := BackendChanges{Service: k}
	have := make(map[netip.AddrPort]int, len(actual))
	for _, b := range actual {
		have[unmapped(b).AddrPort()] = b.Weight
	}
	want := make(map[netip.AddrPort]bool, len(desired))
	for _, b := range desired {
		b = unmapped(b)
		ap := b.AddrPort()
		want[ap] = true
		w, ok := have[ap]
		switch {
		case !ok:
			bc.Add = append(bc.Add, b)
		case w != b.Weight:
			bc.Update = append(bc.Update, b)
		}
	}
	for _, b := range actual {
		if b = unmapped(b); !want[b.AddrPort()] {
			bc.Delete = append(bc.Delete, b)
		}
	}
	changed := len(bc.Add)+len(bc.Update)+len(bc.Delete) > 0
	return bc, changed
}

func unmapped(b Backend) Backend {
	b.Addr = b.Addr.Unmap()
	return b
}

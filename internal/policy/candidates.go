package policy

import (
	"cmp"
	"slices"
)

// CandidatePools returns the pools a Service may get an address from
// automatically: pools with autoAssign whose serviceAllocation admits the
// Service. They come in the order to try them:
//
//  1. pools with a priority, lowest number first;
//  2. pools with a serviceAllocation but no priority;
//  3. pools without serviceAllocation;
//
// and by name within each group. Pools that name the Service's namespace or
// select it are thus preferred over catch-all pools, as users of
// serviceAllocation expect.
func CandidatePools(cfg Config, ns string, nsLabels, svcLabels map[string]string) []*Pool {
	var out []*Pool
	for _, p := range cfg.Pools {
		if p.AutoAssign && p.AdmitsService(ns, nsLabels, svcLabels) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePoolOrder)
	return out
}

func comparePoolOrder(a, b *Pool) int {
	if a.HasPriority != b.HasPriority {
		if a.HasPriority {
			return -1
		}
		return 1
	}
	if a.HasPriority {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
	}
	if a.HasServiceAllocation != b.HasServiceAllocation {
		if a.HasServiceAllocation {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Name, b.Name)
}

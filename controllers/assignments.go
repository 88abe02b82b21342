package controllers

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/internal/ipam"
	"github.com/ironlb/ironlb/internal/policy"
)

// assignments is the controller's single source of truth for who holds
// which address: the allocator plus the resolved pools it was given. All
// access is serialised; only the API writes around it run in parallel.
type assignments struct {
	namespace string
	lbClass   string

	mu       sync.Mutex
	alloc    *ipam.Allocator
	cfg      policy.Config
	restored bool

	// poolStatus is told which pools' counts changed.
	poolStatus *trigger
	// waiting holds the Services whose last allocation failed. They are
	// retried whenever an address is freed, as it may be the one they wait
	// for; otherwise a Service pending on a full pool would stay pending
	// after a deletion until something touched it.
	waiting map[string]bool
	// retry is told which Services to reconcile again; nil retries nothing.
	retry *trigger
}

func newAssignments(namespace, lbClass string) *assignments {
	return &assignments{
		namespace:  namespace,
		lbClass:    lbClass,
		alloc:      ipam.New(),
		poolStatus: &trigger{},
		waiting:    map[string]bool{},
	}
}

// restore loads, once, every address already published in a Service's
// status, before anything new is assigned: a restarted or newly elected
// controller must never hand out an address another Service still uses.
// Older Services win contested addresses; the losers are re-allocated by
// their own reconcile, which tells the user in an Event.
func (a *assignments) restore(ctx context.Context, c client.Reader) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.restored {
		return nil
	}
	log := ctrl.LoggerFrom(ctx)
	res, err := LoadResources(ctx, c, a.namespace, true)
	if err != nil {
		return fmt.Errorf("restore assignments: %w", err)
	}
	cfg, _ := policy.Resolve(res)
	a.setConfigLocked(cfg)

	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs); err != nil {
		return fmt.Errorf("restore assignments: list services: %w", err)
	}
	slices.SortFunc(svcs.Items, func(x, y corev1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(serviceKey(&x), serviceKey(&y))
	})
	restored := 0
	for i := range svcs.Items {
		svc := &svcs.Items[i]
		addrs := ingressAddrs(svc)
		if !servedBy(svc, a.lbClass) || len(addrs) == 0 {
			continue
		}
		w, err := requestFor(svc)
		if err != nil {
			continue // the Service's own reconcile reports it
		}
		// Any pool may hold a restored address; whether it still suits the
		// Service's candidates is the reconcile's business.
		w.Pools = nil
		if _, err := a.alloc.Assign(w.Request, addrs); err != nil {
			log.Info("published address not restored; the service will be re-allocated", "service", w.Service, "ip", addrs, "reason", err.Error())
			continue
		}
		restored++
	}
	log.Info("restored assignments from service status", "services", restored)
	a.restored = true
	a.touchAllPoolsLocked()
	return nil
}

// setConfig installs a newly resolved configuration.
func (a *assignments) setConfig(cfg policy.Config) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setConfigLocked(cfg)
	a.touchAllPoolsLocked()
}

func (a *assignments) setConfigLocked(cfg policy.Config) {
	a.cfg = cfg
	a.alloc.SetPools(ipamPools(cfg))
}

func (a *assignments) touchAllPoolsLocked() {
	for name, p := range a.cfg.Pools {
		a.poolStatus.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: name}})
	}
}

func (a *assignments) touchPoolLocked(name string) {
	if p, ok := a.cfg.Pools[name]; ok {
		a.poolStatus.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: name}})
	}
}

// outcome is the result of allocating for one Service.
type outcome struct {
	assignment ipam.Assignment
	held       bool // the Service holds assignment after the call
	err        error
}

// allocate chooses the candidate pools for w and allocates. On failure the
// Service holds nothing: its status must not keep advertising an address
// that no longer matches what it asks for.
func (a *assignments) allocate(w wantedRequest, ns string, nsLabels, svcLabels map[string]string) outcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	before, hadBefore := a.alloc.Assigned(w.Service)
	pools, err := a.candidatesLocked(w, ns, nsLabels, svcLabels)
	var out outcome
	if err == nil {
		w.Pools = pools
		out.assignment, err = a.alloc.Allocate(w.Request)
	}
	if err != nil {
		a.alloc.Release(w.Service)
		out.err = err
	} else {
		out.held = true
	}
	if hadBefore && (!out.held || !sameAddrs(before.Addresses, out.assignment.Addresses)) {
		a.retryWaitingLocked()
	}
	// After the retry: a Service that just lost its address must not be
	// retried for its own loss.
	if out.held {
		delete(a.waiting, w.Service)
	} else {
		a.waiting[w.Service] = true
	}
	if hadBefore {
		a.touchPoolLocked(before.Pool)
	}
	if out.held {
		a.touchPoolLocked(out.assignment.Pool)
	}
	return out
}

func (a *assignments) candidatesLocked(w wantedRequest, ns string, nsLabels, svcLabels map[string]string) ([]string, error) {
	if w.Pool != "" {
		p, ok := a.cfg.Pools[w.Pool]
		if !ok {
			return nil, fmt.Errorf("pool %q named by annotation %s does not exist or is left out of the configuration (see ConfigurationState): %w", w.Pool, annAddressPool, ipam.ErrUnknownPool)
		}
		if !p.AdmitsService(ns, nsLabels, svcLabels) {
			return nil, fmt.Errorf("pool %q does not admit this service (spec.serviceAllocation): %w", w.Pool, ipam.ErrNoPool)
		}
		return []string{w.Pool}, nil
	}
	if len(w.Addresses) > 0 {
		// A requested address may come from any pool admitting the Service,
		// autoAssign or not, as with MetalLB.
		var names []string
		for name, p := range a.cfg.Pools {
			if p.AdmitsService(ns, nsLabels, svcLabels) {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		if len(names) == 0 {
			return nil, fmt.Errorf("no pool admits this service: %w", ipam.ErrNoPool)
		}
		return names, nil
	}
	var names []string
	for _, p := range policy.CandidatePools(a.cfg, ns, nsLabels, svcLabels) {
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no pool with autoAssign admits this service (check the IPAddressPools' spec.serviceAllocation): %w", ipam.ErrNoPool)
	}
	return names, nil
}

// release frees whatever the Service holds and reports whether it held
// anything.
func (a *assignments) release(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.waiting, key)
	before, ok := a.alloc.Assigned(key)
	if ok {
		a.alloc.Release(key)
		a.touchPoolLocked(before.Pool)
		a.retryWaitingLocked()
	}
	return ok
}

// retryWaitingLocked re-enqueues the Services waiting for an address.
func (a *assignments) retryWaitingLocked() {
	if a.retry == nil || len(a.waiting) == 0 {
		return
	}
	reqs := make([]reconcile.Request, 0, len(a.waiting))
	for key := range a.waiting {
		namespace, name, _ := strings.Cut(key, "/")
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}})
	}
	a.retry.Add(reqs...)
}

// poolCounts returns the counts to publish for a pool, clamped to the API's
// int64 fields (an IPv6 /64 holds more than that).
func (a *assignments) poolCounts(name string) (assigned4, assigned6, avail4, avail6 int64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cfg.Pools[name]; !ok {
		return 0, 0, 0, 0, false
	}
	s := a.alloc.Stats(name)
	return clamp(s.AssignedIPv4), clamp(s.AssignedIPv6), clamp(s.AvailableIPv4), clamp(s.AvailableIPv6), true
}

func clamp(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

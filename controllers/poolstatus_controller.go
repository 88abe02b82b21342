package controllers

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/api/v1beta1"
)

// poolStatusInterval bounds how often one pool's counts are written: during
// a burst of allocations the status trails by at most this much instead of
// costing one API write per Service.
const poolStatusInterval = time.Second

// PoolStatusReconciler publishes each IPAddressPool's assigned and available
// address counts.
type PoolStatusReconciler struct {
	client.Client
	state *assignments

	mu        sync.Mutex
	lastWrite map[string]time.Time
}

// SetupWithManager registers the reconciler; it runs on the allocator's
// signals, not on pool watches.
func (r *PoolStatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.lastWrite = map[string]time.Time{}
	return ctrl.NewControllerManagedBy(mgr).Named("pool-status").
		WatchesRawSource(r.state.poolStatus.Source()).
		Complete(r)
}

// Reconcile writes one pool's counts when they changed.
func (r *PoolStatusReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	wait := poolStatusInterval - time.Since(r.lastWrite[req.Name])
	r.mu.Unlock()
	if wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	a4, a6, f4, f6, ok := r.state.poolCounts(req.Name)
	if !ok {
		return reconcile.Result{}, nil
	}
	pool := &v1beta1.IPAddressPool{}
	if err := r.Get(ctx, req.NamespacedName, pool); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	want := v1beta1.IPAddressPoolStatus{AssignedIPv4: a4, AssignedIPv6: a6, AvailableIPv4: f4, AvailableIPv6: f6}
	if pool.Status == want {
		return reconcile.Result{}, nil
	}
	// The whole status in the patch: every count is a required field, and a
	// diff against a status never written would leave out the zeros.
	patch, err := json.Marshal(map[string]any{"status": want})
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := r.Status().Patch(ctx, pool, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	r.mu.Lock()
	r.lastWrite[req.Name] = time.Now()
	r.mu.Unlock()
	return reconcile.Result{}, nil
}

package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/internal/ipam"
)

// Event reasons on Services.
const (
	ReasonIPAllocated      = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonIPChanged        = "IPChanged"
	ReasonIPReleased       = "IPReleased"
)

// ServiceReconciler gives LoadBalancer Services their external addresses.
type ServiceReconciler struct {
	client.Client
	Recorder record.EventRecorder
	LBClass  string
	Workers  int
	// IPMode is published with every address; empty means Proxy.
	IPMode corev1.LoadBalancerIPMode

	state *assignments
	// all re-enqueues every Service when the configuration changes.
	all *trigger
}

// SetupWithManager registers the reconciler.
func (r *ServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	workers := r.Workers
	if workers < 1 {
		workers = 1
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.servicesInNamespace)).
		WatchesRawSource(r.all.Source()).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// servicesInNamespace re-evaluates a namespace's Services when its labels
// change (pools may select namespaces by label).
func (r *ServiceReconciler) servicesInNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs, client.InNamespace(o.GetName())); err != nil {
		return nil
	}
	return serviceRequests(svcs.Items, r.LBClass)
}

func serviceRequests(svcs []corev1.Service, lbClass string) []reconcile.Request {
	var out []reconcile.Request
	for i := range svcs {
		if svcs[i].Spec.Type == corev1.ServiceTypeLoadBalancer {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&svcs[i])})
		}
	}
	return out
}

// Reconcile makes the Service's status match what the allocator holds for
// it, allocating first when needed.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := r.state.restore(ctx, r.Client); err != nil {
		return reconcile.Result{}, err
	}
	key := req.Namespace + "/" + req.Name
	svc := &corev1.Service{}
	if err := r.Get(ctx, req.NamespacedName, svc); err != nil {
		if apierrors.IsNotFound(err) {
			r.state.release(key)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if !svc.DeletionTimestamp.IsZero() {
		r.state.release(key)
		return reconcile.Result{}, nil
	}
	if !servedBy(svc, r.LBClass) {
		return reconcile.Result{}, r.stopServing(ctx, svc)
	}

	w, err := requestFor(svc)
	if err != nil {
		r.state.release(key)
		r.Recorder.Eventf(svc, corev1.EventTypeWarning, ReasonAllocationFailed, "Failed to allocate IP for %q: %v", key, err)
		return reconcile.Result{}, r.publish(ctx, svc, ipam.Assignment{})
	}
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: svc.Namespace}, &ns); err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	out := r.state.allocate(w, svc.Namespace, ns.Labels, svc.Labels)
	before := ingressAddrs(svc)
	if out.err != nil {
		r.Recorder.Eventf(svc, corev1.EventTypeWarning, ReasonAllocationFailed, "Failed to allocate IP for %q: %v", key, out.err)
		if len(before) > 0 {
			r.Recorder.Eventf(svc, corev1.EventTypeWarning, ReasonIPReleased, "Released %s: it no longer satisfies the service", addrList(before))
		}
		return reconcile.Result{}, r.publish(ctx, svc, ipam.Assignment{})
	}
	if err := r.publish(ctx, svc, out.assignment); err != nil {
		return reconcile.Result{}, err
	}
	switch {
	case len(before) == 0:
		r.Recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPAllocated, "Assigned IP %s from pool %q", addrList(out.assignment.Addresses), out.assignment.Pool)
	case !sameAddrs(before, out.assignment.Addresses):
		r.Recorder.Eventf(svc, corev1.EventTypeWarning, ReasonIPChanged, "Moved from %s to %s (pool %q): the old address is outside the service's pools or no longer matches its request", addrList(before), addrList(out.assignment.Addresses), out.assignment.Pool)
	}
	return reconcile.Result{}, nil
}

// stopServing releases a Service that is no longer ours. Its published
// addresses are cleared unless another load-balancer class now owns it.
func (r *ServiceReconciler) stopServing(ctx context.Context, svc *corev1.Service) error {
	held := r.state.release(serviceKey(svc))
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		// Another class's controller owns the status now; only our
		// annotation is ours to remove, and only if we held the Service:
		// otherwise the annotation may be that controller's (another
		// ironlb with another --lb-class), and removing it would start a
		// write war with it.
		if !held {
			return nil
		}
		return r.dropAnnotation(ctx, svc)
	}
	return r.publish(ctx, svc, ipam.Assignment{})
}

// publish writes the assignment to status.loadBalancer.ingress and the
// ip-allocated-from-pool annotation. Both travel in one patch to the status
// subresource (which for Services accepts metadata too): one API write per
// assignment, and no moment where one is visible without the other.
func (r *ServiceReconciler) publish(ctx context.Context, svc *corev1.Service, asg ipam.Assignment) error {
	want := make([]corev1.LoadBalancerIngress, 0, len(asg.Addresses))
	mode := r.IPMode
	if mode == "" {
		mode = corev1.LoadBalancerIPModeProxy
	}
	for _, a := range asg.Addresses {
		want = append(want, corev1.LoadBalancerIngress{IP: a.String(), IPMode: &mode})
	}
	if ingressEqual(svc.Status.LoadBalancer.Ingress, want) && svc.Annotations[annAllocatedFromPool] == asg.Pool {
		return nil
	}
	patch, err := publishPatch(want, asg.Pool)
	if err != nil {
		return err
	}
	if err := r.Status().Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			r.state.release(serviceKey(svc))
			return nil
		}
		return fmt.Errorf("write status of service %s: %w", serviceKey(svc), err)
	}
	return nil
}

// publishPatch is the merge patch that sets the ingress and the annotation
// (removes them for none and ""): written directly, as it touches two
// fields, instead of diffing two encoded copies of the whole Service (a
// seventh of the controller's CPU in a profile of 5,000 assignments).
func publishPatch(ingress []corev1.LoadBalancerIngress, pool string) ([]byte, error) {
	var ann, ing any // JSON null removes
	if pool != "" {
		ann = pool
	}
	if len(ingress) > 0 {
		ing = ingress
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{annAllocatedFromPool: ann}},
		"status":   map[string]any{"loadBalancer": map[string]any{"ingress": ing}},
	})
	if err != nil {
		return nil, fmt.Errorf("encode status patch: %w", err)
	}
	return patch, nil
}

// dropAnnotation removes only the annotation (another class's controller
// owns the status now). The patch goes to the status subresource, which
// for Services keeps metadata changes and resets only the spec: the
// controller's role may write Service status but nothing of a Service's
// spec.
func (r *ServiceReconciler) dropAnnotation(ctx context.Context, svc *corev1.Service) error {
	if _, ok := svc.Annotations[annAllocatedFromPool]; !ok {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null}}}`, annAllocatedFromPool)
	if err := r.Status().Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove annotation %s of service %s: %w", annAllocatedFromPool, serviceKey(svc), err)
	}
	return nil
}

func ingressEqual(a, b []corev1.LoadBalancerIngress) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.LoadBalancerIngress) bool {
		return x.IP == y.IP && x.Hostname == y.Hostname &&
			(x.IPMode == nil) == (y.IPMode == nil) && (x.IPMode == nil || *x.IPMode == *y.IPMode)
	})
}

func sameAddrs(a, b []netip.Addr) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return fmt.Sprintf("%q", s)
}

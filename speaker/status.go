package speaker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ironlb/ironlb/api/v1beta1"
)

// Labels on ServiceL2Status objects, as MetalLB sets them, so that
// `kubectl get servicel2statuses -l metallb.io/service-name=web` works alike.
const (
	LabelNode             = "metallb.io/node"
	LabelServiceName      = "metallb.io/service-name"
	LabelServiceNamespace = "metallb.io/service-namespace"
)

// interfaceReporter is implemented by announcers that know on which
// interfaces they actually answer; ServiceL2Status uses it for addresses
// announced on "every suitable interface".
type interfaceReporter interface {
	Owned() map[string][]netip.Addr
}

// StatusName is the name of the ServiceL2Status of a Service announced from
// node: readable, and unique thanks to a hash of all three names (the
// readable part alone is ambiguous and may be truncated).
func StatusName(namespace, service, node string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + service + "/" + node))
	suffix := hex.EncodeToString(sum[:5])
	base := "l2-" + service + "-" + node
	const maxBase = 253 - 1 - 10
	if len(base) > maxBase {
		base = base[:maxBase]
	}
	return strings.TrimRight(base, "-.") + "-" + suffix
}

// statusWriter keeps this node's ServiceL2Status objects in line with the
// last announcements, on a controller of its own so that API writes never
// delay announcing.
type statusWriter struct {
	client    client.Client
	node      string
	namespace string
	announcer Announcer

	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending bool
	bySvc   map[string][]Announcement
	alive   []string
}

var statusKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "servicel2status"}}

func (w *statusWriter) setupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("servicel2status").
		Watches(&v1beta1.ServiceL2Status{}, handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			return []reconcile.Request{statusKey}
		}), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			// Only ours: removing a dead node's objects must not wake its
			// speaker (if it is merely cut off) into a fight over them.
			return o.GetLabels()[LabelNode] == w.node
		}))).
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.queue = q
			if w.pending {
				q.Add(statusKey)
			}
			return nil
		})).
		Complete(w)
}

// set records the latest announcements and schedules a write.
func (w *statusWriter) set(bySvc map[string][]Announcement, alive []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bySvc, w.alive, w.pending = bySvc, alive, true
	if w.queue != nil {
		w.queue.Add(statusKey)
	}
}

// Reconcile writes the latest announcements.
func (w *statusWriter) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	w.mu.Lock()
	bySvc, alive, ready := w.bySvc, w.alive, w.pending
	w.mu.Unlock()
	if !ready {
		// Nothing announced yet: do not judge existing objects before the
		// first election.
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, w.sync(ctx, bySvc, alive)
}

// sync makes the ServiceL2Status objects of this node describe the Services
// it announces. The alive member with the smallest name also removes the
// objects of nodes that are no longer members, so that a dead node does not
// go on looking like an owner.
func (w *statusWriter) sync(ctx context.Context, bySvc map[string][]Announcement, alive []string) error {
	want := map[string]v1beta1.ServiceL2StatusStatus{}
	for svcKey, as := range bySvc {
		ns, name, _ := strings.Cut(svcKey, "/")
		want[StatusName(ns, name, w.node)] = v1beta1.ServiceL2StatusStatus{
			Node: w.node, ServiceName: name, ServiceNamespace: ns, Interfaces: w.interfaces(as),
		}
	}
	janitor := len(alive) > 0 && slices.Min(alive) == w.node

	var list v1beta1.ServiceL2StatusList
	if err := w.client.List(ctx, &list, client.InNamespace(w.namespace)); err != nil {
		return fmt.Errorf("list ServiceL2Status: %w", err)
	}
	var errs []error
	for i := range list.Items {
		st := &list.Items[i]
		owner := st.Labels[LabelNode]
		switch {
		case owner == w.node:
			status, ok := want[st.Name]
			if !ok {
				errs = append(errs, w.deleteStatus(ctx, st))
				continue
			}
			delete(want, st.Name)
			if !equalStatus(st.Status, status) {
				st.Status = status
				if err := w.client.Status().Update(ctx, st); err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("update ServiceL2Status %s: %w", st.Name, err))
				}
			}
		case janitor && owner != "" && !slices.Contains(alive, owner):
			errs = append(errs, w.deleteStatus(ctx, st))
		}
	}
	for name, status := range want {
		errs = append(errs, w.createStatus(ctx, name, status))
	}
	return errors.Join(errs...)
}

func (w *statusWriter) createStatus(ctx context.Context, name string, status v1beta1.ServiceL2StatusStatus) error {
	st := &v1beta1.ServiceL2Status{ObjectMeta: metav1.ObjectMeta{
		Name:      name,
		Namespace: w.namespace,
		Labels: map[string]string{
			LabelNode:             status.Node,
			LabelServiceName:      status.ServiceName,
			LabelServiceNamespace: status.ServiceNamespace,
		},
	}}
	if err := w.client.Create(ctx, st); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Our cache lags; its watch event brings us back to fill in
			// the status.
			return nil
		}
		return fmt.Errorf("create ServiceL2Status %s: %w", name, err)
	}
	// Status is a subresource: Create ignores it.
	st.Status = status
	if err := w.client.Status().Update(ctx, st); err != nil {
		return fmt.Errorf("write status of ServiceL2Status %s: %w", name, err)
	}
	return nil
}

func (w *statusWriter) deleteStatus(ctx context.Context, st *v1beta1.ServiceL2Status) error {
	if err := w.client.Delete(ctx, st); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete ServiceL2Status %s: %w", st.Name, err)
	}
	return nil
}

// interfaces names the interfaces a Service's addresses are answered on:
// those its advertisements name or, for "every suitable interface", those
// the announcer reports, sorted.
func (w *statusWriter) interfaces(as []Announcement) []v1beta1.InterfaceInfo {
	var names []string
	var owned map[string][]netip.Addr
	for _, a := range as {
		if len(a.Interfaces) > 0 {
			names = append(names, a.Interfaces...)
			continue
		}
		if owned == nil {
			rep, ok := w.announcer.(interfaceReporter)
			if !ok {
				continue
			}
			owned = rep.Owned()
		}
		for iface, addrs := range owned {
			if slices.Contains(addrs, a.Addr) {
				names = append(names, iface)
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]v1beta1.InterfaceInfo, 0, len(names))
	for _, n := range names {
		out = append(out, v1beta1.InterfaceInfo{Name: n})
	}
	return out
}

func equalStatus(a, b v1beta1.ServiceL2StatusStatus) bool {
	return a.Node == b.Node && a.ServiceName == b.ServiceName && a.ServiceNamespace == b.ServiceNamespace &&
		slices.Equal(a.Interfaces, b.Interfaces)
}

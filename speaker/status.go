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
	return statusName("l2-", namespace, service, node)
}

// statusName names a status object of a kind by its prefix; the hash
// leaves the prefix out, as the kinds never share objects.
func statusName(prefix, namespace, service, node string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + service + "/" + node))
	suffix := hex.EncodeToString(sum[:5])
	base := prefix + service + "-" + node
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
	// The BGP side (bgpstatus.go): peers per service, set apart from the
	// layer-2 announcements since BGP does not wait for the first join.
	bgpPending bool
	bgpPeers   map[string][]string
	bgpAlive   []string
}

var statusKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "servicel2status"}}

func (w *statusWriter) setupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{statusKey}
	})
	ours := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		// Only ours: removing a dead node's objects must not wake its
		// speaker (if it is merely cut off) into a fight over them.
		return o.GetLabels()[LabelNode] == w.node
	}))
	return ctrl.NewControllerManagedBy(mgr).Named("servicel2status").
		Watches(&v1beta1.ServiceL2Status{}, one, ours).
		Watches(&v1beta1.ServiceBGPStatus{}, one, ours).
		WatchesRawSource(source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.queue = q
			if w.pending || w.bgpPending {
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
	bgpPeers, bgpAlive, bgpReady := w.bgpPeers, w.bgpAlive, w.bgpPending
	w.mu.Unlock()
	var errs []error
	if bgpReady {
		errs = append(errs, w.syncBGP(ctx, bgpPeers, bgpAlive))
	}
	// Nothing announced yet: do not judge existing objects before the
	// first election.
	if ready {
		errs = append(errs, w.sync(ctx, bySvc, alive))
	}
	return reconcile.Result{}, errors.Join(errs...)
}

// sync makes the ServiceL2Status objects of this node describe the Services
// it announces. The alive member with the smallest name also removes the
// objects of nodes that are no longer members, so that a dead node does not
// go on looking like an owner.
func (w *statusWriter) sync(ctx context.Context, bySvc map[string][]Announcement, alive []string) error {
	want := map[string]v1beta1.ServiceL2StatusStatus{}
	for svcKey, as := range bySvc {
		ns, name, _ := strings.Cut(svcKey, "/")
		want[svcKey] = v1beta1.ServiceL2StatusStatus{Node: w.node, ServiceName: name, ServiceNamespace: ns, Interfaces: w.interfaces(as)}
	}
	return syncStatuses(ctx, w, statusKind[v1beta1.ServiceL2Status, *v1beta1.ServiceL2Status, v1beta1.ServiceL2StatusStatus]{
		kind: "ServiceL2Status",
		name: StatusName,
		list: func(ctx context.Context) ([]v1beta1.ServiceL2Status, error) {
			var list v1beta1.ServiceL2StatusList
			err := w.client.List(ctx, &list, client.InNamespace(w.namespace))
			return list.Items, err
		},
		status: func(st *v1beta1.ServiceL2Status) *v1beta1.ServiceL2StatusStatus { return &st.Status },
		equal:  equalStatus,
	}, want, alive)
}

// statusKind is what syncStatuses needs to know of one kind of status
// object: T, whose pointer O is the client.Object, with a status S.
type statusKind[T any, O interface {
	*T
	client.Object
}, S any] struct {
	// kind names the objects in errors.
	kind string
	// name names the object of a Service announced from a node.
	name func(namespace, service, node string) string
	// list lists the objects of this writer's namespace.
	list func(ctx context.Context) ([]T, error)
	// status is where an object holds its status.
	status func(O) *S
	equal  func(a, b S) bool
}

// syncStatuses makes this node's objects of a kind hold want, a status per
// Service ("namespace/name"): it creates the missing ones, updates the
// changed ones and deletes those of Services no longer in want. The
// janitor among alive also deletes the objects of nodes not in alive.
// Every kind shares these rules, so that users read all alike.
func syncStatuses[T any, O interface {
	*T
	client.Object
}, S any](ctx context.Context, w *statusWriter, k statusKind[T, O, S], want map[string]S, alive []string) error {
	missing := make(map[string]string, len(want)) // object name: Service, until listed
	for svcKey := range want {
		ns, name, _ := strings.Cut(svcKey, "/")
		missing[k.name(ns, name, w.node)] = svcKey
	}
	janitor := w.janitor(alive)

	items, err := k.list(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", k.kind, err)
	}
	var errs []error
	for i := range items {
		st := O(&items[i])
		owner := st.GetLabels()[LabelNode]
		switch {
		case owner == w.node:
			svcKey, ok := missing[st.GetName()]
			if !ok {
				errs = append(errs, w.deleteStatus(ctx, st))
				continue
			}
			delete(missing, st.GetName())
			if status := want[svcKey]; !k.equal(*k.status(st), status) {
				*k.status(st) = status
				if err := w.client.Status().Update(ctx, st); err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("update %s %s: %w", k.kind, st.GetName(), err))
				}
			}
		case janitor && owner != "" && !slices.Contains(alive, owner):
			errs = append(errs, w.deleteStatus(ctx, st))
		}
	}
	for name, svcKey := range missing {
		ns, svc, _ := strings.Cut(svcKey, "/")
		status := want[svcKey]
		st := O(new(T))
		st.SetName(name)
		st.SetNamespace(w.namespace)
		st.SetLabels(map[string]string{LabelNode: w.node, LabelServiceName: svc, LabelServiceNamespace: ns})
		errs = append(errs, w.createWithStatus(ctx, st, func() { *k.status(st) = status }))
	}
	return errors.Join(errs...)
}

// janitor tells whether this node removes the objects of nodes that are
// no longer members: the alive member with the smallest name does.
func (w *statusWriter) janitor(alive []string) bool {
	return len(alive) > 0 && slices.Min(alive) == w.node
}

// createWithStatus creates obj, then writes the status setStatus puts in it.
func (w *statusWriter) createWithStatus(ctx context.Context, obj client.Object, setStatus func()) error {
	if err := w.client.Create(ctx, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Our cache lags; its watch event brings us back to fill in
			// the status.
			return nil
		}
		return fmt.Errorf("create %T %s: %w", obj, obj.GetName(), err)
	}
	// Status is a subresource: Create ignores it.
	setStatus()
	if err := w.client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("write status of %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

func (w *statusWriter) deleteStatus(ctx context.Context, st client.Object) error {
	if err := w.client.Delete(ctx, st); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %T %s: %w", st, st.GetName(), err)
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

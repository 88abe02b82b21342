package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/internal/policy"
)

const eventSource = "ironlb-speaker"

// ReasonNodeAssigned is the Event on a Service when this node starts
// announcing it, as MetalLB names it.
const ReasonNodeAssigned = "nodeAssigned"

// The speaker role's permissions, rendered into config/rbac by
// `make generate`; each verb is one the code uses (config/rbac's test runs
// a speaker under exactly these). Reads go through the manager's cache
// (list and watch) except two at start-up, before the cache runs: this
// node's Node (its address) and the memberlist Secret (get).
//
// Cluster-wide: what it announces and forwards, and the Events it records
// on Services (events.k8s.io, controller-runtime's recorder).
// +kubebuilder:rbac:groups="",resources=services;nodes,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// Only in ironlb's namespace (a Role): the configuration, its Secrets (the
// memberlist key, BGP passwords) and the per-node status objects.
// +kubebuilder:rbac:groups="",namespace=metallb-system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=ipaddresspools;l2advertisements;bgpadvertisements;communities;bfdprofiles;bgppeers,verbs=list;watch
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=servicel2statuses;servicebgpstatuses,verbs=list;watch;create;delete
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=servicel2statuses/status;servicebgpstatuses/status,verbs=update

// Announcer answers for the given addresses and for no others; each call
// carries the complete set.
type Announcer interface {
	Sync(ctx context.Context, announce []Announcement) error
}

// key is the one reconcile request: every change leads to one recomputation
// of everything, and bursts of changes fold into one.
var key = reconcile.Request{NamespacedName: types.NamespacedName{Name: "layer2"}}

// reconciler recomputes this node's announcements.
type reconciler struct {
	client    client.Client
	recorder  events.EventRecorder
	node      string
	namespace string
	lbClass   string
	announcer Announcer
	forwarder *forwarding
	// bgp is nil in tests that leave BGP mode out.
	bgp     *bgpMode
	members Members
	joined  <-chan struct{}
	metrics *metricSet
	status  *statusWriter
	// resync, when set, brings the next Reconcile at the latest this long
	// after the last one.
	resync time.Duration

	mu sync.Mutex
	// announced is the addresses given to the announcer by the last
	// successful Sync, per service, to tell takeovers.
	announced map[string][]Announcement
}

func (r *reconciler) setupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{key}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("speaker").
		Watches(&corev1.Service{}, one).
		Watches(&discoveryv1.EndpointSlice{}, one).
		Watches(&corev1.Node{}, one, builder.WithPredicates(nodeChanged{})).
		Watches(&corev1.Secret{}, one)
	for _, o := range []client.Object{&v1beta1.IPAddressPool{}, &v1beta1.L2Advertisement{}, &v1beta1.BGPAdvertisement{},
		&v1beta1.Community{}, &v1beta1.BFDProfile{}, &v1beta2.BGPPeer{}} {
		b = b.Watches(o, one, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	}
	if err := b.WatchesRawSource(r.membershipSource()).Complete(r); err != nil {
		return err
	}
	return r.status.setupWithManager(mgr)
}

// membershipSource enqueues the key on every membership change and once the
// first join is over.
func (r *reconciler) membershipSource() source.Source {
	return source.Func(func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		go func() {
			joined := r.joined
			for {
				select {
				case <-ctx.Done():
					return
				case <-joined:
					joined = nil
				case <-r.members.Changes():
				}
				q.Add(key)
			}
		}()
		return nil
	})
}

// nodeChanged passes Node updates that can change an election: labels,
// addresses (peer discovery) and the NetworkUnavailable condition, not the
// heartbeats that make up most Node updates.
type nodeChanged struct{ predicate.Funcs }

func (nodeChanged) Update(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*corev1.Node)
	n, ok2 := e.ObjectNew.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return !maps.Equal(o.Labels, n.Labels) || networkUnavailable(o) != networkUnavailable(n) ||
		!slices.Equal(o.Status.Addresses, n.Status.Addresses) || o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero()
}

// Reconcile computes this node's announcements from the cache and the
// memberlist view, hands them to the forwarder and the announcer, then reports them through
// Events, metrics and (asynchronously) ServiceL2Status objects.
func (r *reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	joined := true
	select {
	case <-r.joined:
	default:
		joined = false
	}
	if !joined && r.bgp == nil {
		// Not announcing before the first join; it enqueues us when over.
		return reconcile.Result{}, nil
	}
	in, err := r.inputs(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !joined {
		// BGP needs no election, so it advertises at once; layer 2 waits
		// for the first join. The membership view is incomplete until then,
		// so nothing may judge other nodes by it.
		in.Alive = nil
		bgpAdvertised, bgpErr := r.bgp.sync(ctx, in)
		return reconcile.Result{RequeueAfter: r.resync}, errors.Join(r.forwarder.sync(ctx, in, bgpAdvertised), bgpErr)
	}
	desired := Desired(in)
	ctrl.LoggerFrom(ctx).V(1).Info("computed announcements", "members", in.Alive, "announce", len(desired))
	// Forwarding first: an address this node takes over carries traffic
	// by the time the responder draws it here. A forwarder failure is
	// retried; the announcements go ahead without the addresses whose
	// forwarding is not in place (releasing an address matters most then,
	// and announcing one that would drop its traffic helps no one).
	// Addresses advertised by BGP are forwarded too: the router sends
	// their traffic to this node.
	var bgpAdvertised []Announcement
	var bgpErr error
	if r.bgp != nil {
		bgpAdvertised, bgpErr = r.bgp.sync(ctx, in)
	}
	fwdErr := r.forwarder.sync(ctx, in, append(slices.Clone(desired), bgpAdvertised...))
	desired = r.forwarder.forwarded(in, desired, fwdErr)
	if err := r.announcer.Sync(ctx, desired); err != nil {
		return reconcile.Result{}, fmt.Errorf("announce %d addresses: %w", len(desired), err)
	}
	if o, ok := r.announcer.(membershipObserver); ok {
		o.membersSeen(in.Alive)
	}
	bySvc := groupByService(desired)
	r.tellTakeovers(ctx, in.Services, bySvc)
	r.metrics.observe(desired, len(in.Alive))
	// Status goes to the API on its own queue: a slow or unreachable API
	// server must not hold up the next failover.
	r.status.set(bySvc, in.Alive)
	return reconcile.Result{RequeueAfter: r.resync}, errors.Join(fwdErr, bgpErr)
}

// inputs reads everything Desired needs.
func (r *reconciler) inputs(ctx context.Context) (Inputs, error) {
	res, err := controllers.LoadResources(ctx, r.client, r.namespace, false)
	if err != nil {
		return Inputs{}, err
	}
	// Problems are the controller's to report (ConfigurationState, Events);
	// the speaker acts on what is valid.
	cfg, _ := policy.Resolve(res)
	var (
		svcs  corev1.ServiceList
		eps   discoveryv1.EndpointSliceList
		nodes corev1.NodeList
	)
	for _, l := range []client.ObjectList{&svcs, &eps, &nodes} {
		if err := r.client.List(ctx, l); err != nil {
			return Inputs{}, fmt.Errorf("list %T: %w", l, err)
		}
	}
	return Inputs{
		Node:     r.node,
		Config:   cfg,
		LBClass:  r.lbClass,
		Services: svcs.Items,
		Slices:   eps.Items,
		Nodes:    nodes.Items,
		Alive:    r.members.Alive(),
	}, nil
}

func groupByService(as []Announcement) map[string][]Announcement {
	out := map[string][]Announcement{}
	for _, a := range as {
		out[a.Service] = append(out[a.Service], a)
	}
	return out
}

// tellTakeovers logs the addresses this node took and released, records
// nodeAssigned on each Service it has started announcing, and counts the
// addresses it took.
func (r *reconciler) tellTakeovers(ctx context.Context, svcs []corev1.Service, now map[string][]Announcement) {
	log := ctrl.LoggerFrom(ctx)
	r.mu.Lock()
	before := r.announced
	r.announced = now
	r.mu.Unlock()
	for svcKey, as := range before {
		for _, a := range as {
			if !slices.ContainsFunc(now[svcKey], func(b Announcement) bool { return b.Addr == a.Addr }) {
				log.Info("stopped announcing", "service", svcKey, "ip", a.Addr)
			}
		}
	}
	for svcKey, as := range now {
		for _, a := range as {
			if !slices.ContainsFunc(before[svcKey], func(b Announcement) bool { return b.Addr == a.Addr }) {
				r.metrics.takeovers.Inc()
				log.Info("announcing", "service", svcKey, "ip", a.Addr, "iface", a.Interfaces)
			}
		}
		if len(before[svcKey]) > 0 {
			continue
		}
		for i := range svcs {
			if svcs[i].Namespace+"/"+svcs[i].Name == svcKey {
				r.recorder.Eventf(&svcs[i], nil, corev1.EventTypeNormal, ReasonNodeAssigned, "Announce",
					"announcing from node %q with protocol %q", r.node, "layer2")
				break
			}
		}
	}
}

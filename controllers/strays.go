package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// The stray reporters list and watch the configuration kinds in every
// namespace (as metadata only): the one permission on metallb.io objects
// outside ironlb's namespace the controller needs.
// +kubebuilder:rbac:groups=metallb.io,resources=ipaddresspools;l2advertisements;bgpadvertisements;communities;bfdprofiles;bgppeers,verbs=list;watch

// ReasonWrongNamespace is the reason of the Event on a metallb.io
// configuration object created outside ironlb's namespace.
const ReasonWrongNamespace = "WrongNamespace"

// configKinds are the metallb.io kinds users write as configuration; ironlb
// reads them only from its own namespace.
var configKinds = []schema.GroupVersionKind{
	{Group: "metallb.io", Version: "v1beta1", Kind: "IPAddressPool"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "L2Advertisement"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "BGPAdvertisement"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "Community"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "BFDProfile"},
	{Group: "metallb.io", Version: "v1beta2", Kind: "BGPPeer"},
}

// strayReporter tells users, with a Warning Event on the object, that a
// metallb.io configuration object outside ironlb's namespace has no effect
// and where to create it. The admission policy in config/admission refuses
// such objects at apply time; this covers clusters without it, and objects
// created before it was installed. The objects are watched as metadata
// only, through a cache of their own whose field selector leaves out ironlb's
// namespace, so the configuration caches stay namespaced and an ordinary
// cluster sends nothing here at all. One Event per object and generation.
type strayReporter struct {
	namespace string
	recorder  record.EventRecorder
	cache     cache.Cache
	gvk       schema.GroupVersionKind

	mu sync.Mutex
	// told is the object (by UID, as a name can be reused) and generation
	// last told about, per name.
	told map[types.NamespacedName]toldAbout
}

type toldAbout struct {
	uid        types.UID
	generation int64
}

// setupStrayReporters registers one reporter per configuration kind, all
// sharing one metadata cache of everything outside namespace. Where the
// controller may not list the configuration kinds cluster-wide (RBAC
// trimmed by the cluster's owner), it registers none and says so once: a
// cache that can never sync would stop the whole controller, and the
// admission policy still refuses such objects at apply time.
func setupStrayReporters(mgr ctrl.Manager, namespace string, recorder record.EventRecorder) error {
	probe := &metav1.PartialObjectMetadataList{}
	probe.SetGroupVersionKind(configKinds[0].GroupVersion().WithKind(configKinds[0].Kind + "List"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mgr.GetAPIReader().List(ctx, probe, client.Limit(1)); apierrors.IsForbidden(err) {
		mgr.GetLogger().Info("configuration outside the namespace is not reported: no permission to list it cluster-wide", "namespace", namespace, "reason", err.Error())
		return nil
	}
	strays, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:               mgr.GetScheme(),
		Mapper:               mgr.GetRESTMapper(),
		DefaultFieldSelector: fields.OneTermNotEqualSelector("metadata.namespace", namespace),
		DefaultTransform:     cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("cache of configuration outside namespace %s: %w", namespace, err)
	}
	if err := mgr.Add(strays); err != nil {
		return err
	}
	for _, gvk := range configKinds {
		r := &strayReporter{namespace: namespace, recorder: recorder, cache: strays, gvk: gvk, told: map[types.NamespacedName]toldAbout{}}
		src := source.Kind(strays, r.newObject(),
			&handler.TypedEnqueueRequestForObject[*metav1.PartialObjectMetadata]{},
			predicate.TypedGenerationChangedPredicate[*metav1.PartialObjectMetadata]{})
		if err := ctrl.NewControllerManagedBy(mgr).Named("stray-" + gvk.Kind).WatchesRawSource(src).Complete(r); err != nil {
			return err
		}
	}
	return nil
}

func (r *strayReporter) newObject() *metav1.PartialObjectMetadata {
	o := &metav1.PartialObjectMetadata{}
	o.SetGroupVersionKind(r.gvk)
	return o
}

// Reconcile records the Event for a generation of the object not told yet.
func (r *strayReporter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	o := r.newObject()
	if err := r.cache.Get(ctx, req.NamespacedName, o); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.told, req.NamespacedName)
			r.mu.Unlock()
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	if o.Namespace == r.namespace {
		return reconcile.Result{}, nil // the field selector should have left it out
	}
	now := toldAbout{uid: o.UID, generation: o.Generation}
	r.mu.Lock()
	last := r.told[req.NamespacedName]
	r.told[req.NamespacedName] = now
	r.mu.Unlock()
	if last == now {
		return reconcile.Result{}, nil
	}
	ref := &corev1.ObjectReference{
		APIVersion: r.gvk.GroupVersion().String(), Kind: r.gvk.Kind,
		Namespace: o.Namespace, Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion,
	}
	r.recorder.Eventf(ref, corev1.EventTypeWarning, ReasonWrongNamespace,
		"%s %s/%s has no effect: ironlb reads metallb.io configuration only from namespace %s; create it in %s (MetalLB refuses it the same way)",
		r.gvk.Kind, o.Namespace, o.Name, r.namespace, r.namespace)
	return reconcile.Result{}, nil
}

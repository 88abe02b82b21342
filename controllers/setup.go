// Package controllers holds the reconcilers of `ironlb controller`: thin
// loops that read objects, call the pure cores in internal/ (policy
// resolution, address allocation) and write status and Events.
package controllers

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

const eventSource = "ironlb-controller"

// The controller role's permissions, rendered into config/rbac by
// `make generate`; each verb is one the code uses (config/rbac's test runs
// the controller under exactly these). Reads go through the manager's
// cache, so list and watch suffice; get is never sent.
//
// Cluster-wide: the Services it assigns addresses to (status and the
// ip-allocated-from-pool annotation, both written through the status
// subresource: nothing of a Service's spec), the Namespaces pools select
// by label, and the Events it records on Services.
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
//
// Only in ironlb's namespace (a Role): the configuration, its Secrets
// (BGP passwords; the memberlist key it creates when missing), its
// ConfigurationState and pool status, and the leader-election Lease.
// +kubebuilder:rbac:groups="",namespace=metallb-system,resources=secrets,verbs=list;watch;create
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=metallb-system,resources=leases,verbs=get;create;update
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=ipaddresspools;l2advertisements;bgpadvertisements;communities;bfdprofiles;bgppeers,verbs=list;watch
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=ipaddresspools/status,verbs=patch
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=configurationstates,verbs=list;watch;create;update
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=configurationstates/status,verbs=patch

// Setup registers the controller role's reconcilers with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	state := newAssignments(o.Namespace, o.LBClass)
	services := &trigger{}
	state.retry = services
	recorder, err := newRecorder(mgr, eventSource)
	if err != nil {
		return err
	}
	if err := (&ConfigReconciler{Client: mgr.GetClient(), Recorder: recorder, Namespace: o.Namespace, LBClass: o.LBClass, state: state, services: services}).SetupWithManager(mgr); err != nil {
		return err
	}
	ipMode, err := parseIPMode(string(o.IPMode))
	if err != nil {
		return err
	}
	if err := (&ServiceReconciler{Client: mgr.GetClient(), Recorder: recorder, LBClass: o.LBClass, Workers: o.ReconcileBurst, IPMode: ipMode, state: state, all: services}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&PoolStatusReconciler{Client: mgr.GetClient(), state: state}).SetupWithManager(mgr); err != nil {
		return err
	}
	return mgr.Add(&memberlistSecret{client: mgr.GetClient(), namespace: o.Namespace, log: mgr.GetLogger().WithName("memberlist-secret")})
}

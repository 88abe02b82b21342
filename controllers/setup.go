// Package controllers holds the reconcilers of `ironlb controller`: thin
// loops that read objects, call the pure cores in internal/ (policy
// resolution, address allocation) and write status and Events.
package controllers

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

const eventSource = "ironlb-controller"

// The controller role's permissions, rendered into config/rbac by
// `make generate`.
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups="",resources=services/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=metallb.io,resources=ipaddresspools;l2advertisements;bgpadvertisements;communities;bfdprofiles;bgppeers,verbs=get;list;watch
// +kubebuilder:rbac:groups=metallb.io,resources=ipaddresspools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=metallb.io,resources=configurationstates,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=metallb.io,resources=configurationstates/status,verbs=get;update;patch

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
	if err := setupStrayReporters(mgr, o.Namespace, recorder); err != nil {
		return err
	}
	ipMode, err := parseIPMode(string(o.IPMode))
	if err != nil {
		return err
	}
	if err := (&ServiceReconciler{Client: mgr.GetClient(), Recorder: recorder, LBClass: o.LBClass, Workers: o.ReconcileBurst, IPMode: ipMode, state: state, all: services}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&PoolStatusReconciler{Client: mgr.GetClient(), state: state}).SetupWithManager(mgr)
}

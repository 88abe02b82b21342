package controllers

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/internal/policy"
)

// Names of what the configuration reconciler writes.
const (
	ConfigurationStateName = "controller"
	ConditionValid         = "Valid"
	ReasonInvalidConfig    = "InvalidConfiguration"
	// ConditionDanglingReferences is True while an object names another
	// that does not exist (yet): a warning; Result stays Valid when nothing
	// else is wrong.
	ConditionDanglingReferences = "DanglingReferences"
	ReasonDanglingReference     = "DanglingReference"
)

// ConfigReconciler resolves the metallb.io objects into one configuration,
// hands it to the allocator, and reports problems in the ConfigurationState
// named "controller" and in Events on the objects at fault.
type ConfigReconciler struct {
	client.Client
	Recorder  record.EventRecorder
	Namespace string
	LBClass   string

	state    *assignments
	services *trigger
	// reported holds the problems already told as Events, so a problem is
	// told once, not on every resolution.
	reported map[string]bool
}

// SetupWithManager registers the reconciler. Every input maps to the one
// key, so bursts of changes collapse into one resolution.
func (r *ConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: ConfigurationStateName}}}
	})
	specOnly := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	b := ctrl.NewControllerManagedBy(mgr).Named("config").
		For(&v1beta1.ConfigurationState{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetName() == ConfigurationStateName
		})))
	for _, o := range []client.Object{&v1beta1.IPAddressPool{}, &v1beta1.L2Advertisement{}, &v1beta1.BGPAdvertisement{},
		&v1beta1.Community{}, &v1beta1.BFDProfile{}, &v1beta2.BGPPeer{}} {
		b = b.Watches(o, one, specOnly)
	}
	return b.Watches(&corev1.Secret{}, one).
		Watches(&corev1.Namespace{}, one, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Complete(r)
}

// Reconcile resolves the configuration.
func (r *ConfigReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	res, err := LoadResources(ctx, r.Client, r.Namespace, true)
	if err != nil {
		return reconcile.Result{}, err
	}
	cfg, problems := policy.Resolve(res)
	r.state.setConfig(cfg)

	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs); err != nil {
		return reconcile.Result{}, err
	}
	r.services.Add(serviceRequests(svcs.Items, r.LBClass)...)

	r.tellProblems(res, problems)
	return reconcile.Result{}, r.writeState(ctx, problems)
}

// tellProblems records a Warning Event on each object at fault, once per
// distinct problem: reason InvalidConfiguration, or DanglingReference for a
// name that resolves once its object appears.
func (r *ConfigReconciler) tellProblems(res policy.Resources, problems []policy.Problem) {
	objects := objectIndex(res)
	now := make(map[string]bool, len(problems))
	for _, p := range problems {
		now[p.Message] = true
		if r.reported[p.Message] {
			continue
		}
		reason := ReasonInvalidConfig
		if p.Dangling {
			reason = ReasonDanglingReference
		}
		if obj, ok := objects[p.Kind+"/"+p.Namespace+"/"+p.Name]; ok {
			r.Recorder.Eventf(obj, corev1.EventTypeWarning, reason, "%s", p.Message)
		}
	}
	r.reported = now
}

func objectIndex(res policy.Resources) map[string]client.Object {
	idx := map[string]client.Object{}
	add := func(kind string, o client.Object) { idx[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o }
	for i := range res.Pools {
		add("IPAddressPool", &res.Pools[i])
	}
	for i := range res.L2Advs {
		add("L2Advertisement", &res.L2Advs[i])
	}
	for i := range res.BGPAdvs {
		add("BGPAdvertisement", &res.BGPAdvs[i])
	}
	for i := range res.Communities {
		add("Community", &res.Communities[i])
	}
	for i := range res.BFDProfiles {
		add("BFDProfile", &res.BFDProfiles[i])
	}
	for i := range res.Peers {
		add("BGPPeer", &res.Peers[i])
	}
	return idx
}

// writeState creates or updates ConfigurationState "controller".
func (r *ConfigReconciler) writeState(ctx context.Context, problems []policy.Problem) error {
	var msgs, dangling []string
	for _, p := range problems {
		if p.Dangling {
			dangling = append(dangling, p.Message)
		} else {
			msgs = append(msgs, p.Message)
		}
	}
	return WriteConfigurationState(ctx, r.Client, StateReport{
		Namespace: r.Namespace, Name: ConfigurationStateName,
		Labels:        map[string]string{v1beta1.ComponentTypeLabel: "controller"},
		Problems:      msgs,
		ResolvesNames: true,
		Dangling:      dangling,
		Valid:         "every object is part of the configuration",
		Outcome:       "the objects at fault are left out, the rest is in force",
	})
}

// StateReport is what a component reports in its ConfigurationState.
type StateReport struct {
	Namespace, Name string
	// Labels are set on the object, others it has are kept.
	Labels map[string]string
	// Problems are the messages for errorSummary, one a line; none means
	// Valid.
	Problems []string
	// ResolvesNames is set by the component that resolves references
	// between objects (the controller): it alone writes the
	// DanglingReferences condition, from Dangling, the messages of
	// references to objects that do not exist (yet). They are warnings and
	// leave Result alone.
	ResolvesNames bool
	Dangling      []string
	// Valid is the Valid condition's message without problems; Outcome
	// tells users, in its message, what the component does about them.
	Valid, Outcome string
}

// WriteConfigurationState creates or updates the ConfigurationState of a
// component (the controller, or the speaker of one node): Result Valid or
// Invalid, errorSummary and the Valid condition, and for the controller the
// DanglingReferences condition.
func WriteConfigurationState(ctx context.Context, c client.Client, rep StateReport) error {
	st := &v1beta1.ConfigurationState{ObjectMeta: metav1.ObjectMeta{Name: rep.Name, Namespace: rep.Namespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, st, func() error {
		if st.Labels == nil {
			st.Labels = map[string]string{}
		}
		maps.Copy(st.Labels, rep.Labels)
		return nil
	}); err != nil {
		return fmt.Errorf("write ConfigurationState %s/%s: %w", rep.Namespace, rep.Name, err)
	}
	orig := st.DeepCopy()
	cond := metav1.Condition{Type: ConditionValid, Status: metav1.ConditionTrue, Reason: "Resolved", Message: rep.Valid, ObservedGeneration: st.Generation}
	st.Status.Result, st.Status.ErrorSummary = v1beta1.ConfigurationResultValid, ""
	if len(rep.Problems) > 0 {
		st.Status.Result = v1beta1.ConfigurationResultInvalid
		st.Status.ErrorSummary = strings.Join(rep.Problems, "\n")
		cond.Status, cond.Reason = metav1.ConditionFalse, ReasonInvalidConfig
		cond.Message = fmt.Sprintf("%d problem(s); %s: %s", len(rep.Problems), rep.Outcome, rep.Problems[0])
	}
	apierrors.SetStatusCondition(&st.Status.Conditions, cond)
	if rep.ResolvesNames {
		apierrors.SetStatusCondition(&st.Status.Conditions, danglingCondition(rep.Dangling, st.Generation))
	}
	if err := c.Status().Patch(ctx, st, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("write ConfigurationState %s/%s status: %w", rep.Namespace, rep.Name, err)
	}
	return nil
}

// maxDanglingShown keeps the condition's message well inside the 32 KiB a
// condition message may hold.
const maxDanglingShown = 20

// danglingCondition tells whether objects name others that do not exist
// yet. MetalLB accepts such names, and `kubectl apply -f dir/` creates
// objects in any order, so this is a warning: True lists the names, which
// resolve by themselves once their objects appear.
func danglingCondition(dangling []string, generation int64) metav1.Condition {
	c := metav1.Condition{Type: ConditionDanglingReferences, Status: metav1.ConditionFalse, Reason: "Resolved",
		Message: "every name an object uses resolves", ObservedGeneration: generation}
	if len(dangling) > 0 {
		c.Status, c.Reason = metav1.ConditionTrue, ReasonDanglingReference
		shown := dangling[:min(len(dangling), maxDanglingShown)]
		c.Message = fmt.Sprintf("%d name(s) select nothing until their objects appear; the configuration is otherwise unaffected:\n%s",
			len(dangling), strings.Join(shown, "\n"))
		if len(shown) < len(dangling) {
			c.Message += fmt.Sprintf("\n(%d more, see the Events of the objects)", len(dangling)-len(shown))
		}
	}
	return c
}

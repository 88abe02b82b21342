package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// Annotation keys as users write them.
const (
	annIPs        = "metallb.io/loadBalancerIPs"
	annIPsLegacy  = "metallb.universe.tf/loadBalancerIPs"
	annPool       = "metallb.io/address-pool"
	annPoolLegacy = "metallb.universe.tf/address-pool"
	annShare      = "metallb.io/allow-shared-ip"
	annFromPool   = "metallb.io/ip-allocated-from-pool"
)

// runControllerWith starts the controller role with o (the test-only fields
// filled in) and returns a function that stops it.
func runControllerWith(t *testing.T, env *controlplane.Env, o controllers.Options) (stop func()) {
	t.Helper()
	o.MetricsAddr, o.ProbeAddr, o.SkipNameValidation = "0", "0", true
	if o.Namespace == "" {
		o.Namespace = ns
	}
	if o.ReconcileBurst == 0 {
		o.ReconcileBurst = 4
	}
	mgr, err := controllers.NewManager(env.Config, o)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func withLabels(kv ...string) svcOpt {
	return func(s *corev1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withSpecIP(ip string) svcOpt {
	return func(s *corev1.Service) { s.Spec.LoadBalancerIP = ip }
}

func withClass(class string) svcOpt {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class }
}

// withLocal sets externalTrafficPolicy Local and the pod selector.
func withLocal(selector map[string]string) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = selector
	}
}

func withFamilies(policy corev1.IPFamilyPolicy, families ...corev1.IPFamily) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = families
	}
}

// updateService applies mutate to the current Service, retrying on write
// conflicts with the controller's own writes.
func updateService(t *testing.T, env *controlplane.Env, namespace, name string, mutate func(*corev1.Service)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var s corev1.Service
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
			return err
		}
		mutate(&s)
		return env.Client.Update(context.Background(), &s)
	})
	if err != nil {
		t.Fatalf("update service %s/%s: %v", namespace, name, err)
	}
}

func updatePool(t *testing.T, env *controlplane.Env, name string, mutate func(*v1beta1.IPAddressPool)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p v1beta1.IPAddressPool
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
			return err
		}
		mutate(&p)
		return env.Client.Update(context.Background(), &p)
	})
	if err != nil {
		t.Fatalf("update pool %s: %v", name, err)
	}
}

func updateNamespace(t *testing.T, env *controlplane.Env, name string, mutate func(*corev1.Namespace)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var n corev1.Namespace
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &n); err != nil {
			return err
		}
		mutate(&n)
		return env.Client.Update(context.Background(), &n)
	})
	if err != nil {
		t.Fatalf("update namespace %s: %v", name, err)
	}
}

func deleteService(t *testing.T, env *controlplane.Env, namespace, name string) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}); err != nil {
		t.Fatalf("delete service %s/%s: %v", namespace, name, err)
	}
}

func deletePool(t *testing.T, env *controlplane.Env, name string) {
	t.Helper()
	if err := env.Client.Delete(context.Background(), &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		t.Fatalf("delete pool %s: %v", name, err)
	}
}

func getService(t *testing.T, env *controlplane.Env, namespace, name string) *corev1.Service {
	t.Helper()
	var s corev1.Service
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
		t.Fatalf("get service %s/%s: %v", namespace, name, err)
	}
	return &s
}

// eventMessages returns "Reason: message" of every Event on the object.
func eventMessages(t *testing.T, env *controlplane.Env, namespace, name string) []string {
	t.Helper()
	var evs corev1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(namespace)); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

// waitPoolStatus waits until the pool's status counts are want.
func waitPoolStatus(t *testing.T, env *controlplane.Env, namespace, name string, want v1beta1.IPAddressPoolStatus) {
	t.Helper()
	eventually(t, 30*time.Second, func() string {
		var p v1beta1.IPAddressPool
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &p); err != nil {
			return err.Error()
		}
		if p.Status != want {
			return fmt.Sprintf("pool %s status = %+v, want %+v", name, p.Status, want)
		}
		return ""
	})
}

// waitConfigResult waits until ConfigurationState "controller" reports
// result, with every fragment in its error summary.
func waitConfigResult(t *testing.T, env *controlplane.Env, result string, fragments ...string) {
	t.Helper()
	eventually(t, 30*time.Second, func() string {
		var st v1beta1.ConfigurationState
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.ConfigurationStateName}, &st); err != nil {
			return err.Error()
		}
		if string(st.Status.Result) != result {
			return fmt.Sprintf("ConfigurationState result = %q (%q), want %q", st.Status.Result, st.Status.ErrorSummary, result)
		}
		for _, f := range fragments {
			if !strings.Contains(st.Status.ErrorSummary, f) {
				return fmt.Sprintf("ConfigurationState error summary %q lacks %q", st.Status.ErrorSummary, f)
			}
		}
		var valid *metav1.Condition
		for i := range st.Status.Conditions {
			if st.Status.Conditions[i].Type == controllers.ConditionValid {
				valid = &st.Status.Conditions[i]
			}
		}
		wantCond := metav1.ConditionTrue
		if result != string(v1beta1.ConfigurationResultValid) {
			wantCond = metav1.ConditionFalse
		}
		if valid == nil || valid.Status != wantCond {
			return fmt.Sprintf("condition Valid = %+v, want status %s", valid, wantCond)
		}
		return ""
	})
}

// waitQuiet waits until the Service stops changing: its resourceVersion is
// the same on polls a second apart. Two controllers fighting over one field
// never get there.
func waitQuiet(t *testing.T, env *controlplane.Env, namespace, name string) {
	t.Helper()
	last, since := "", time.Now()
	eventually(t, 30*time.Second, func() string {
		rv := getService(t, env, namespace, name).ResourceVersion
		if rv != last {
			last, since = rv, time.Now()
		}
		if time.Since(since) < time.Second {
			return fmt.Sprintf("service %s/%s still changing (resourceVersion %s)", namespace, name, rv)
		}
		return ""
	})
}

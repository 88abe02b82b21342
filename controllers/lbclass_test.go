package controllers_test

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
)

const (
	ourClass   = "example.com/ironlb"
	otherClass = "example.com/other"
	classNS    = "ironlb-classed"
)

// Two ironlb controllers side by side: the default one serves Services
// without a class, the --lb-class one only its class, each from the pools
// of its own configuration namespace. Neither touches the other's Services,
// nor those of a third implementation.
func TestLoadBalancerClasses(t *testing.T) {
	env := newEnv(t)
	// One worker each: the Service queue is then processed in order, so a
	// Service reconciled later proves the earlier ones were seen.
	runControllerWith(t, env, controllers.Options{ReconcileBurst: 1})
	runControllerWith(t, env, controllers.Options{LBClass: ourClass, Namespace: classNS, ReconcileBurst: 1})
	classPool := pool("c", "172.25.254.70-172.25.254.79")
	classPool.Namespace = classNS
	create(t, env, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: classNS}},
		pool("a", "172.25.254.50-172.25.254.59"), classPool)
	waitPoolsKnown(t, env, ns, "a")
	waitPoolsKnown(t, env, classNS, "c")

	create(t, env, lbService("default", "foreign", withClass(otherClass)))
	create(t, env, lbService("default", "plain"))
	create(t, env, lbService("default", "classy", withClass(ourClass)))
	waitIngress(t, env, "default", "plain", "172.25.254.50")
	waitIngress(t, env, "default", "classy", "172.25.254.70")
	waitQuiet(t, env, "default", "plain")
	waitQuiet(t, env, "default", "classy")
	for name, want := range map[string]string{"plain": "a", "classy": "c"} {
		if got := getService(t, env, "default", name).Annotations[annFromPool]; got != want {
			t.Errorf("%s: %s = %q, want %q", name, annFromPool, got, want)
		}
	}
	if got := ingress(t, env, "default", "foreign"); len(got) != 0 {
		t.Errorf("foreign (class %s): ingress = %v, want none", otherClass, got)
	}
	if evs := eventMessages(t, env, "default", "foreign"); len(evs) != 0 {
		t.Errorf("foreign (class %s): events %q, want none", otherClass, evs)
	}
	waitPoolStatus(t, env, ns, "a", v1beta1.IPAddressPoolStatus{AssignedIPv4: 1, AvailableIPv4: 9})
	waitPoolStatus(t, env, classNS, "c", v1beta1.IPAddressPoolStatus{AssignedIPv4: 1, AvailableIPv4: 9})

	// A Service handed to another implementation releases its address.
	// The API server forbids changing spec.loadBalancerClass while the type
	// is LoadBalancer (and clears the status when the type changes), so a
	// user goes through ClusterIP.
	create(t, env, lbService("default", "wants-50", withAnnotation(annIPs, "172.25.254.50")))
	waitEvent(t, env, "default", "wants-50", controllers.ReasonAllocationFailed, "172.25.254.50", "default/plain")
	updateService(t, env, "default", "plain", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	updateService(t, env, "default", "plain", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		other := otherClass
		s.Spec.LoadBalancerClass = &other
	})
	waitIngress(t, env, "default", "wants-50", "172.25.254.50")
	eventually(t, 30*time.Second, func() string {
		if v, ok := getService(t, env, "default", "plain").Annotations[annFromPool]; ok {
			return fmt.Sprintf("plain (now class %s) still has %s=%q, want it removed", otherClass, annFromPool, v)
		}
		return ""
	})

	// What the other implementation publishes stays: ironlb leaves the
	// status of a Service of another class alone.
	s := getService(t, env, "default", "plain")
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	if err := env.Client.Status().Update(t.Context(), s); err != nil {
		t.Fatalf("write status as the other implementation: %v", err)
	}
	create(t, env, lbService("default", "after"))
	waitIngress(t, env, "default", "after", "172.25.254.51")
	waitQuiet(t, env, "default", "plain")
	waitIngress(t, env, "default", "plain", "203.0.113.7")
}

package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// The tutorial: the example pool, the example Service, then a second one.
func TestExamplePoolAssignsFirstAddresses(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	dir, err := controlplane.ExamplesDir()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl("apply", "-f", filepath.Join(dir, "01-l2-first-pool.yaml")); err != nil {
		t.Fatalf("apply pool: %v\n%s", err, out)
	}
	manifest, err := os.ReadFile(filepath.Join(dir, "03-service-loadbalancer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := env.KubectlInput(manifest, "apply", "-n", "default", "-f", "-"); err != nil {
		t.Fatalf("apply service: %v\n%s", err, out)
	}
	waitIngress(t, env, "default", "dhj-service", "172.25.254.50")
	out, err := env.Kubectl("get", "svc", "dhj-service", "-n", "default")
	if err != nil || !strings.Contains(out, "172.25.254.50") {
		t.Fatalf("kubectl get svc dhj-service = %q (%v), want EXTERNAL-IP 172.25.254.50", out, err)
	}
	create(t, env, lbService("default", "second"))
	waitIngress(t, env, "default", "second", "172.25.254.51")
	waitEvent(t, env, "default", "dhj-service", controllers.ReasonIPAllocated, "172.25.254.50", "first-pool")

	var s corev1.Service
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "dhj-service"}, &s); err != nil {
		t.Fatal(err)
	}
	if got := s.Annotations["metallb.io/ip-allocated-from-pool"]; got != "first-pool" {
		t.Errorf("annotation ip-allocated-from-pool = %q, want first-pool", got)
	}
	// The speakers' forwarder carries the traffic by default, so
	// kube-proxy must leave the address alone.
	if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeProxy {
		t.Errorf("ingress ipMode = %v, want Proxy", m)
	}
	// Pool status counts what is assigned.
	eventually(t, 30*time.Second, func() string {
		var p v1beta1.IPAddressPool
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "first-pool"}, &p); err != nil {
			return err.Error()
		}
		if p.Status.AssignedIPv4 != 2 || p.Status.AvailableIPv4 != 48 {
			return fmt.Sprintf("pool status = %+v, want 2 assigned, 48 available", p.Status)
		}
		return ""
	})
}

func TestRequestsSharingAndRelease(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("a", "172.25.254.50-172.25.254.52"))

	create(t, env, lbService("default", "wants-52", withAnnotation("metallb.io/loadBalancerIPs", "172.25.254.52")))
	waitIngress(t, env, "default", "wants-52", "172.25.254.52")

	legacy := lbService("default", "legacy", withAnnotation("metallb.universe.tf/loadBalancerIPs", "172.25.254.52"))
	create(t, env, legacy)
	waitEvent(t, env, "default", "legacy", controllers.ReasonAllocationFailed, "172.25.254.52", "default/wants-52")
	if got := ingress(t, env, "default", "legacy"); len(got) != 0 {
		t.Errorf("legacy got %v while its address is taken, want none", got)
	}

	// Sharing: same key, different ports -> one address.
	create(t, env,
		lbService("default", "dns-tcp", withPort(53, corev1.ProtocolTCP), withAnnotation("metallb.io/allow-shared-ip", "dns")),
		lbService("default", "dns-udp", withPort(53, corev1.ProtocolUDP), withAnnotation("metallb.io/allow-shared-ip", "dns")))
	waitIngress(t, env, "default", "dns-tcp", "172.25.254.50")
	waitIngress(t, env, "default", "dns-udp", "172.25.254.50")

	// Deleting the holder frees its address for the waiting Service.
	if err := env.Client.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wants-52"}}); err != nil {
		t.Fatal(err)
	}
	// The waiting Service is retried on its own when an address frees.
	waitIngress(t, env, "default", "legacy", "172.25.254.52")

	// Leaving type LoadBalancer releases and clears the status.
	updateService(t, env, "default", "legacy", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	waitIngress(t, env, "default", "legacy")
	create(t, env, lbService("default", "next"))
	waitIngress(t, env, "default", "next", "172.25.254.51")
}

func TestPoolSelectionRules(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	off := false
	expensive := pool("expensive", "172.25.254.200/30")
	expensive.Spec.AutoAssign = &off
	low := pool("team-a", "172.25.254.100/31")
	low.Spec.AllocateTo = &v1beta1.ServiceAllocation{Priority: 10, Namespaces: []string{"team-a"}}
	buggy := pool("buggy", "10.20.0.255-10.20.1.1")
	buggy.Spec.AvoidBuggyIPs = true
	buggy.Spec.AllocateTo = &v1beta1.ServiceAllocation{Priority: 5, Namespaces: []string{"team-b"}}
	create(t, env, expensive, low, buggy, pool("general", "172.25.254.50/31"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}})

	create(t, env, lbService("default", "plain"))
	waitIngress(t, env, "default", "plain", "172.25.254.50")
	create(t, env, lbService("team-a", "a"))
	waitIngress(t, env, "team-a", "a", "172.25.254.100")
	create(t, env, lbService("team-b", "b"))
	waitIngress(t, env, "team-b", "b", "10.20.1.1") // .0.255 and .1.0 avoided
	create(t, env, lbService("default", "pinned", withAnnotation("metallb.io/address-pool", "expensive")))
	waitIngress(t, env, "default", "pinned", "172.25.254.200")
	create(t, env, lbService("default", "missing-pool", withAnnotation("metallb.io/address-pool", "nope")))
	waitEvent(t, env, "default", "missing-pool", controllers.ReasonAllocationFailed, `"nope"`)
}

func TestDualStack(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("v4", "172.25.254.50/32"))
	require := corev1.IPFamilyPolicyRequireDualStack
	create(t, env, lbService("default", "dual", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &require }))
	waitEvent(t, env, "default", "dual", controllers.ReasonAllocationFailed, "IPv6")

	create(t, env, pool("both", "172.25.254.60/32", "fd00:254::60/128"))
	waitIngress(t, env, "default", "dual", "172.25.254.60", "fd00:254::60")
}

func TestBadPoolLeavesGoodOnesAlone(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("good", "172.25.254.50/31"))
	create(t, env, lbService("default", "web"))
	waitIngress(t, env, "default", "web", "172.25.254.50")

	create(t, env, pool("overlapping", "172.25.254.48/29"))
	eventually(t, 30*time.Second, func() string {
		var st v1beta1.ConfigurationState
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "controller"}, &st); err != nil {
			return err.Error()
		}
		if st.Status.Result != v1beta1.ConfigurationResultInvalid || !strings.Contains(st.Status.ErrorSummary, "overlapping") || !strings.Contains(st.Status.ErrorSummary, "good") {
			return fmt.Sprintf("ConfigurationState = %+v, want Invalid naming both pools", st.Status)
		}
		return ""
	})
	create(t, env, lbService("default", "web2"))
	waitIngress(t, env, "default", "web2", "172.25.254.51")
	waitIngress(t, env, "default", "web", "172.25.254.50")
}

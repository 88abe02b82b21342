package controllers_test

import (
	"context"
	"fmt"
	"math"
	"slices"
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

// End-to-end proofs of the allocation rules (issue 3, item 2) through the
// real API server. Each test runs its own control plane and controller.
// docs/allocation.md describes the same rules for users.

// waitPoolsKnown waits until the controller has published counts for every
// named pool, which it does only once the pool is part of its configuration.
// Tests that depend on the order pools are tried in must not create
// Services before: a Service allocated while only some pools are known
// keeps its address (stability), which would defeat the test.
func waitPoolsKnown(t *testing.T, env *controlplane.Env, namespace string, names ...string) {
	t.Helper()
	for _, name := range names {
		eventually(t, 30*time.Second, func() string {
			var p v1beta1.IPAddressPool
			if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &p); err != nil {
				return err.Error()
			}
			if p.Status == (v1beta1.IPAddressPoolStatus{}) {
				return fmt.Sprintf("pool %s has no counts yet", name)
			}
			return ""
		})
	}
}

func TestRequestedAddressesAndPinnedPools(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("a", "172.25.254.50-172.25.254.53"), pool("b", "172.25.254.60/31"))
	waitPoolsKnown(t, env, ns, "a", "b")

	// spec.loadBalancerIP is honoured.
	create(t, env, lbService("default", "spec-ip", withSpecIP("172.25.254.52")))
	waitIngress(t, env, "default", "spec-ip", "172.25.254.52")
	waitEvent(t, env, "default", "spec-ip", controllers.ReasonIPAllocated, "172.25.254.52", `"a"`)

	// Requests a user must fix fail with a message naming what to fix.
	for _, tc := range []struct {
		name      string
		opts      []svcOpt
		fragments []string
	}{
		{
			name:      "both",
			opts:      []svcOpt{withAnnotation(annIPs, "172.25.254.53"), withSpecIP("172.25.254.53")},
			fragments: []string{annIPs, "spec.loadBalancerIP"},
		},
		{
			name:      "malformed",
			opts:      []svcOpt{withAnnotation(annIPsLegacy, "172.25.254.51,not-an-ip")},
			fragments: []string{annIPsLegacy, `"not-an-ip"`, "not an IP address"},
		},
		{
			name:      "two-v4",
			opts:      []svcOpt{withAnnotation(annIPs, "172.25.254.50,172.25.254.51")},
			fragments: []string{annIPs, "172.25.254.50,172.25.254.51", "one address per family"},
		},
		{
			name:      "outside",
			opts:      []svcOpt{withAnnotation(annIPs, "10.99.0.1")},
			fragments: []string{"10.99.0.1", "not in any pool"},
		},
		{
			name:      "pinned-a-wants-b",
			opts:      []svcOpt{withAnnotation(annPool, "a"), withAnnotation(annIPs, "172.25.254.60")},
			fragments: []string{"172.25.254.60", `pool "b"`, `may use "a"`},
		},
		{
			name:      "legacy-pinned-b-wants-a",
			opts:      []svcOpt{withAnnotation(annPoolLegacy, "b"), withSpecIP("172.25.254.53")},
			fragments: []string{"172.25.254.53", `pool "a"`, `may use "b"`},
		},
	} {
		create(t, env, lbService("default", tc.name, tc.opts...))
		waitEvent(t, env, "default", tc.name, controllers.ReasonAllocationFailed, tc.fragments...)
		if got := ingress(t, env, "default", tc.name); len(got) != 0 {
			t.Errorf("%s: ingress = %v after a failed allocation, want none", tc.name, got)
		}
	}

	// The legacy pin alone works.
	create(t, env, lbService("default", "legacy-pinned", withAnnotation(annPoolLegacy, "b")))
	waitIngress(t, env, "default", "legacy-pinned", "172.25.254.60")

	// Changing the pinned pool moves the Service.
	create(t, env, lbService("default", "mover", withAnnotation(annPool, "a")))
	waitIngress(t, env, "default", "mover", "172.25.254.50")
	updateService(t, env, "default", "mover", func(s *corev1.Service) { s.Annotations[annPool] = "b" })
	waitIngress(t, env, "default", "mover", "172.25.254.61")
	waitEvent(t, env, "default", "mover", controllers.ReasonIPChanged, "172.25.254.50", "172.25.254.61", `"b"`)
	if got := getService(t, env, "default", "mover").Annotations[annFromPool]; got != "b" {
		t.Errorf("mover: %s = %q, want b", annFromPool, got)
	}

	// Changing the requested address moves the Service and frees the old one.
	updateService(t, env, "default", "spec-ip", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "172.25.254.51" })
	waitIngress(t, env, "default", "spec-ip", "172.25.254.51")
	waitEvent(t, env, "default", "spec-ip", controllers.ReasonIPChanged, "172.25.254.52", "172.25.254.51")
	create(t, env, lbService("default", "takes-52", withAnnotation(annIPs, "172.25.254.52")))
	waitIngress(t, env, "default", "takes-52", "172.25.254.52")

	// Fixing a rejected request is enough to get the address.
	updateService(t, env, "default", "both", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "" })
	waitIngress(t, env, "default", "both", "172.25.254.53")
	waitEvent(t, env, "default", "both", controllers.ReasonIPAllocated, "172.25.254.53")
}

func TestServiceAllocationSelectors(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	gold := pool("gold", "172.25.254.10/32")
	gold.Spec.AllocateTo = &v1beta1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "gold"}}}}
	web := pool("web", "172.25.254.20/32")
	web.Spec.AllocateTo = &v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"role": "web"}}}}
	create(t, env,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gold", Labels: map[string]string{"tier": "gold"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
		gold, web, pool("general", "172.25.254.30-172.25.254.39"))
	waitPoolsKnown(t, env, ns, "gold", "web", "general")

	// Pools with a serviceAllocation that admits the Service come before
	// catch-all pools; pools that do not admit it are never used.
	create(t, env, lbService("gold", "app"))
	waitIngress(t, env, "gold", "app", "172.25.254.10")
	create(t, env, lbService("plain", "app"))
	waitIngress(t, env, "plain", "app", "172.25.254.30")
	create(t, env, lbService("plain", "web", withLabels("role", "web")))
	waitIngress(t, env, "plain", "web", "172.25.254.20")
	create(t, env, lbService("plain", "pinned-gold", withAnnotation(annPool, "gold")))
	waitEvent(t, env, "plain", "pinned-gold", controllers.ReasonAllocationFailed, `pool "gold" does not admit`)

	// A namespace losing the label moves its Service out of the pool.
	updateNamespace(t, env, "gold", func(n *corev1.Namespace) { delete(n.Labels, "tier") })
	waitIngress(t, env, "gold", "app", "172.25.254.31")
	waitEvent(t, env, "gold", "app", controllers.ReasonIPChanged, "172.25.254.10", "172.25.254.31", `"general"`)

	// A namespace gaining it lets the waiting Service in.
	updateNamespace(t, env, "plain", func(n *corev1.Namespace) { n.Labels = map[string]string{"tier": "gold"} })
	waitIngress(t, env, "plain", "pinned-gold", "172.25.254.10")
	// A Service whose pool still admits it stays where it is.
	waitIngress(t, env, "plain", "app", "172.25.254.30")

	// A Service losing the selected label moves too.
	updateService(t, env, "plain", "web", func(s *corev1.Service) { delete(s.Labels, "role") })
	waitIngress(t, env, "plain", "web", "172.25.254.32")
	waitEvent(t, env, "plain", "web", controllers.ReasonIPChanged, "172.25.254.20", "172.25.254.32")
}

func TestPriorityExhaustionAndRetry(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	off := false
	prio := func(p *v1beta1.IPAddressPool, n int) *v1beta1.IPAddressPool {
		p.Spec.AllocateTo = &v1beta1.ServiceAllocation{Priority: n}
		return p
	}
	manual := prio(pool("p-manual", "172.25.254.44/32"), 1)
	manual.Spec.AutoAssign = &off
	noPrio := pool("p-noprio", "172.25.254.41/32")
	noPrio.Spec.AllocateTo = &v1beta1.ServiceAllocation{Namespaces: []string{"default"}}
	create(t, env, pool("p-none", "172.25.254.40/32"), noPrio,
		prio(pool("p-prio5", "172.25.254.42/32"), 5), prio(pool("p-prio1", "172.25.254.43/32"), 1), manual)
	waitPoolsKnown(t, env, ns, "p-none", "p-noprio", "p-prio5", "p-prio1", "p-manual")

	// Lowest priority first, then pools with a serviceAllocation but no
	// priority, then the rest; autoAssign false is never chosen.
	for i, want := range []string{"172.25.254.43", "172.25.254.42", "172.25.254.41", "172.25.254.40"} {
		name := fmt.Sprintf("s%d", i+1)
		create(t, env, lbService("default", name))
		waitIngress(t, env, "default", name, want)
	}
	create(t, env, lbService("default", "s5"))
	waitEvent(t, env, "default", "s5", controllers.ReasonAllocationFailed,
		"exhausted", `"p-prio1", "p-prio5", "p-noprio", "p-none"`)
	for _, e := range eventMessages(t, env, "default", "s5") {
		if strings.Contains(e, "p-manual") {
			t.Errorf("s5 event %q names p-manual, which has autoAssign false", e)
		}
	}
	waitPoolStatus(t, env, ns, "p-prio1", v1beta1.IPAddressPoolStatus{AssignedIPv4: 1})

	// A deleted Service's address goes to the waiting one without any
	// change to the waiting Service.
	deleteService(t, env, "default", "s1")
	waitIngress(t, env, "default", "s5", "172.25.254.43")
	waitEvent(t, env, "default", "s5", controllers.ReasonIPAllocated, "172.25.254.43", `"p-prio1"`)
}

func TestSharingRules(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("share", "172.25.254.50-172.25.254.59"))
	waitPoolsKnown(t, env, ns, "share")

	steps := []struct {
		svc  *corev1.Service
		want string
	}{
		{lbService("default", "dns-tcp", withPort(53, corev1.ProtocolTCP), withAnnotation(annShare, "dns")), "172.25.254.50"},
		// Same key but the same port+protocol: an address of its own.
		{lbService("default", "dns-tcp-again", withPort(53, corev1.ProtocolTCP), withAnnotation(annShare, "dns")), "172.25.254.51"},
		// Same key, other protocol: shares the first address.
		{lbService("default", "dns-udp", withPort(53, corev1.ProtocolUDP), withAnnotation(annShare, "dns")), "172.25.254.50"},
		{lbService("default", "loc-a", withPort(80, corev1.ProtocolTCP), withLocal(map[string]string{"app": "x"}), withAnnotation(annShare, "loc")), "172.25.254.52"},
		// externalTrafficPolicy Local with other pods: not shared.
		{lbService("default", "loc-b", withPort(81, corev1.ProtocolTCP), withLocal(map[string]string{"app": "y"}), withAnnotation(annShare, "loc")), "172.25.254.53"},
		// Local with the same pods: shared.
		{lbService("default", "loc-c", withPort(82, corev1.ProtocolTCP), withLocal(map[string]string{"app": "x"}), withAnnotation(annShare, "loc")), "172.25.254.52"},
		// Cluster next to Local: not shared.
		{lbService("default", "cl-d", withPort(83, corev1.ProtocolTCP), withAnnotation(annShare, "loc")), "172.25.254.54"},
	}
	for _, s := range steps {
		create(t, env, s.svc)
		waitIngress(t, env, "default", s.svc.Name, s.want)
	}

	// Asking for a shared address that cannot be shared is a clear failure.
	create(t, env,
		lbService("default", "req-port", withPort(53, corev1.ProtocolTCP), withAnnotation(annShare, "dns"), withAnnotation(annIPs, "172.25.254.50")),
		lbService("default", "req-local", withPort(90, corev1.ProtocolTCP), withLocal(map[string]string{"app": "z"}), withAnnotation(annShare, "loc"), withAnnotation(annIPs, "172.25.254.52")),
		lbService("default", "req-key", withPort(91, corev1.ProtocolTCP), withAnnotation(annShare, "other"), withAnnotation(annIPs, "172.25.254.50")),
		lbService("default", "req-nokey", withPort(92, corev1.ProtocolTCP), withAnnotation(annIPs, "172.25.254.50")),
		lbService("default", "req-ok", withPort(93, corev1.ProtocolTCP), withLocal(map[string]string{"app": "x"}), withAnnotation(annShare, "loc"), withAnnotation(annIPs, "172.25.254.52")),
	)
	waitEvent(t, env, "default", "req-port", controllers.ReasonAllocationFailed, "172.25.254.50", "cannot be shared", "53/TCP", "default/dns-tcp")
	waitEvent(t, env, "default", "req-local", controllers.ReasonAllocationFailed, "172.25.254.52", "cannot be shared", "default/loc-a", "app=x")
	waitEvent(t, env, "default", "req-key", controllers.ReasonAllocationFailed, "172.25.254.50", "cannot be shared", `"dns"`, `"other"`)
	waitEvent(t, env, "default", "req-nokey", controllers.ReasonAllocationFailed, "172.25.254.50", "already used by", "default/dns-tcp")
	waitIngress(t, env, "default", "req-ok", "172.25.254.52")
	for _, name := range []string{"req-port", "req-local", "req-key", "req-nokey"} {
		if got := ingress(t, env, "default", name); len(got) != 0 {
			t.Errorf("%s: ingress = %v, want none", name, got)
		}
	}
	// A shared address counts once.
	waitPoolStatus(t, env, ns, "share", v1beta1.IPAddressPoolStatus{AssignedIPv4: 5, AvailableIPv4: 5})
}

func TestFamiliesAndHugeIPv6Pool(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("v4only", "172.25.254.50/32"))
	waitPoolsKnown(t, env, ns, "v4only")

	create(t, env, lbService("default", "prefer-v4only", withFamilies(corev1.IPFamilyPolicyPreferDualStack)))
	waitIngress(t, env, "default", "prefer-v4only", "172.25.254.50")

	create(t, env, pool("dual", "172.25.254.60/32", "fd00:254::60/128"), pool("v6", "fd00:254:1::/64"))
	waitPoolsKnown(t, env, ns, "dual", "v6")
	create(t, env, lbService("default", "prefer-dual", withFamilies(corev1.IPFamilyPolicyPreferDualStack)))
	waitIngress(t, env, "default", "prefer-dual", "172.25.254.60", "fd00:254::60")
	create(t, env, lbService("default", "v6-single", withFamilies(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol)))
	waitIngress(t, env, "default", "v6-single", "fd00:254:1::")
	// IPv6 first in ipFamilies: the addresses follow that order.
	create(t, env, pool("dual2", "172.25.254.70/32", "fd00:254::70/128"))
	waitPoolsKnown(t, env, ns, "dual2")
	create(t, env, lbService("default", "prefer-v6-first", withFamilies(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol)))
	waitIngress(t, env, "default", "prefer-v6-first", "fd00:254::70", "172.25.254.70")

	// A /64 holds 2^64 addresses, more than the status fields can count:
	// available saturates at the largest int64, never wraps negative.
	waitPoolStatus(t, env, ns, "v6", v1beta1.IPAddressPoolStatus{AssignedIPv6: 1, AvailableIPv6: math.MaxInt64})
	waitPoolStatus(t, env, ns, "dual", v1beta1.IPAddressPoolStatus{AssignedIPv4: 1, AssignedIPv6: 1})
	out, err := env.Kubectl("get", "ipaddresspools", "-n", ns, "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	var v6Line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "v6 ") {
			v6Line = l
		}
	}
	if !strings.Contains(v6Line, fmt.Sprint(int64(math.MaxInt64))) || strings.Contains(v6Line, "-") {
		t.Errorf("kubectl get ipaddresspools -o wide: v6 row = %q, want available IPv6 %d\n%s", v6Line, int64(math.MaxInt64), out)
	}
}

func TestPoolRemovalAndShrink(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("a", "172.25.254.50-172.25.254.53"), pool("b", "172.25.254.60/32"))
	waitPoolsKnown(t, env, ns, "a", "b")
	for i, want := range []string{"172.25.254.50", "172.25.254.51", "172.25.254.52"} {
		name := fmt.Sprintf("s%d", i+1)
		create(t, env, lbService("default", name))
		waitIngress(t, env, "default", name, want)
	}
	waitConfigResult(t, env, string(v1beta1.ConfigurationResultValid))

	// Shrinking a pool moves the Services outside it to another pool.
	updatePool(t, env, "a", func(p *v1beta1.IPAddressPool) { p.Spec.Addresses = []string{"172.25.254.50-172.25.254.51"} })
	waitIngress(t, env, "default", "s3", "172.25.254.60")
	waitEvent(t, env, "default", "s3", controllers.ReasonIPChanged, "172.25.254.52", "172.25.254.60", `"b"`)

	// Deleting a pool likewise.
	create(t, env, pool("c", "172.25.254.70/32"))
	waitPoolsKnown(t, env, ns, "c")
	deletePool(t, env, "b")
	waitIngress(t, env, "default", "s3", "172.25.254.70")
	waitEvent(t, env, "default", "s3", controllers.ReasonIPChanged, "172.25.254.60", "172.25.254.70", `"c"`)

	// When no pool has room, the Service loses its address and is told why.
	deletePool(t, env, "c")
	waitIngress(t, env, "default", "s3")
	waitEvent(t, env, "default", "s3", controllers.ReasonIPReleased, "172.25.254.70")
	waitEvent(t, env, "default", "s3", controllers.ReasonAllocationFailed, `pool "a"`, "exhausted")
	if got, ok := getService(t, env, "default", "s3").Annotations[annFromPool]; ok {
		t.Errorf("s3 keeps %s = %q after losing its address", annFromPool, got)
	}
	updatePool(t, env, "a", func(p *v1beta1.IPAddressPool) { p.Spec.Addresses = []string{"172.25.254.50/32"} })
	waitIngress(t, env, "default", "s2")
	waitEvent(t, env, "default", "s2", controllers.ReasonIPReleased, "172.25.254.51")
	waitEvent(t, env, "default", "s2", controllers.ReasonAllocationFailed, `pool "a"`)
	waitPoolStatus(t, env, ns, "a", v1beta1.IPAddressPoolStatus{AssignedIPv4: 1})
	waitIngress(t, env, "default", "s1", "172.25.254.50")
	for _, e := range eventMessages(t, env, "default", "s1") {
		if !strings.HasPrefix(e, controllers.ReasonIPAllocated+":") {
			t.Errorf("s1, never moved, has event %q", e)
		}
	}

	// A bad object makes the configuration Invalid; deleting it makes it
	// Valid again, and the good pools work throughout.
	create(t, env, pool("bad", "172.25.254.48/29"))
	waitConfigResult(t, env, string(v1beta1.ConfigurationResultInvalid), "bad")
	deletePool(t, env, "bad")
	waitConfigResult(t, env, string(v1beta1.ConfigurationResultValid))

	// Growing the pool again gives the waiting Services addresses.
	updatePool(t, env, "a", func(p *v1beta1.IPAddressPool) { p.Spec.Addresses = []string{"172.25.254.50-172.25.254.53"} })
	eventually(t, 30*time.Second, func() string {
		got := slices.Concat(ingress(t, env, "default", "s2"), ingress(t, env, "default", "s3"))
		slices.Sort(got)
		if want := []string{"172.25.254.51", "172.25.254.52"}; !slices.Equal(got, want) {
			return fmt.Sprintf("s2 and s3 hold %v, want %v", got, want)
		}
		return ""
	})
}

package forwarder

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FuzzServiceAnnotations checks the readers of what a user writes on a
// Service for the forwarder: the scheduler annotation and the ClientIP
// affinity timeout. Whatever the value, the result is one the kernel takes
// (a known scheduler, an affinity of 0 or 1 s..1 day), a rejected value
// says so with the sentinel error and falls back to the default, and an
// accepted scheduler reads back the same when written as returned.
func FuzzServiceAnnotations(f *testing.F) {
	for _, seed := range []struct {
		scheduler string
		clientIP  bool
		timeout   int32
	}{
		{"rr", false, 0}, {" WRR ", true, 10800}, {"mh", true, 1}, {"", true, 86400},
		{"round-robin", true, 0}, {"sh", true, 86401}, {"lc", true, -5},
	} {
		f.Add(seed.scheduler, seed.clientIP, seed.timeout)
	}
	f.Fuzz(func(t *testing.T, scheduler string, clientIP bool, timeout int32) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{SchedulerAnnotation: scheduler}}}
		if clientIP {
			svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}

		s, err := schedulerOf(svc)
		switch {
		case !schedulers[s]:
			t.Errorf("schedulerOf(%q) = %q, not a scheduler", scheduler, s)
		case err != nil && (!errors.Is(err, ErrUnknownScheduler) || s != DefaultScheduler):
			t.Errorf("schedulerOf(%q) = %q, %v; want the default and ErrUnknownScheduler", scheduler, s, err)
		case err == nil:
			svc.Annotations[SchedulerAnnotation] = s
			if again, err := schedulerOf(svc); again != s || err != nil {
				t.Errorf("schedulerOf(%q) = %q, but written back reads %q, %v", scheduler, s, again, err)
			}
		}

		a, err := affinityOf(svc)
		switch {
		case !clientIP && (a != 0 || err != nil):
			t.Errorf("affinityOf without ClientIP = %v, %v; want 0, nil", a, err)
		case clientIP && (a < time.Second || a > maxAffinity):
			t.Errorf("affinityOf(%d s) = %v, outside 1s..%v", timeout, a, maxAffinity)
		case err != nil && (!errors.Is(err, ErrInvalidAffinity) || a != DefaultAffinity):
			t.Errorf("affinityOf(%d s) = %v, %v; want the default and ErrInvalidAffinity", timeout, a, err)
		case clientIP && err == nil && a != time.Duration(timeout)*time.Second:
			t.Errorf("affinityOf(%d s) = %v, want the timeout as given", timeout, a)
		}
	})
}

// FuzzExpand builds two Services sharing an address and an EndpointSlice
// from the fuzzer's values and checks what Expand promises whatever its
// input: no panic; a table already in Prepare's canonical form that Prepare
// accepts whole; only announced addresses; and the same table and problems
// whatever the order of Services and slices.
func FuzzExpand(f *testing.F) {
	f.Add("172.25.254.50", int32(80), "TCP", "http", "10.244.1.5", int32(8080), true, false, "rr", false)
	f.Add("fd00:254::50", int32(53), "UDP", "", "fd00:10:244:1::5", int32(5353), false, true, "sh", true)
	f.Add("::ffff:172.25.254.50", int32(443), "SCTP", "https", "::ffff:10.244.1.5", int32(0), true, true, "bogus", true)
	f.Add("172.25.254.50", int32(70000), "", "x", "not-an-ip", int32(-1), false, false, "", false)
	f.Add(exOther.String(), int32(80), "TCP", "", "10.244.1.5", int32(8080), true, false, "rr", false)
	f.Fuzz(func(t *testing.T, ingress string, port int32, proto, portName, endpoint string, target int32, ready, local bool, scheduler string, clientIP bool) {
		svcA := exService("a", nil, []corev1.ServicePort{exServicePort(portName, port, corev1.Protocol(proto), intstr.FromInt32(target))})
		svcA.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ingress}, {IP: exVIP6.String()}}
		svcA.Annotations = map[string]string{SchedulerAnnotation: scheduler}
		if local {
			withLocal(&svcA)
		}
		if clientIP {
			svcA.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}
		// An older Service on the same address and port: one of the two
		// keeps it.
		svcB := exService("b", []netip.Addr{exVIP4}, []corev1.ServicePort{exServicePort("", port, corev1.ProtocolTCP, intstr.FromInt32(target))})
		svcB.CreationTimestamp = metav1.NewTime(time.Unix(1, 0))
		at := discoveryv1.AddressTypeIPv4
		if a, err := netip.ParseAddr(endpoint); err == nil && a.Is6() && !a.Is4In6() {
			at = discoveryv1.AddressTypeIPv6
		}
		ep := discoveryv1.Endpoint{Addresses: []string{endpoint}, NodeName: ptr(exNode), Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready)}}
		portsA := []discoveryv1.EndpointPort{{Name: ptr(portName), Port: ptr(target), Protocol: ptr(corev1.Protocol(proto))}}
		portsB := []discoveryv1.EndpointPort{{Name: ptr(""), Port: ptr(target)}}
		in := ExpandInput{
			Node:      exNode,
			Services:  []corev1.Service{svcA, svcB},
			Slices:    []discoveryv1.EndpointSlice{exSlice("a", at, portsA, ep), exSlice("b", at, portsB, ep)},
			Announced: exAnnounced,
		}
		out, problems := Expand(in)

		prepared, err := Prepare(out)
		if err != nil {
			t.Fatalf("Expand gave services Prepare refuses: %v", err)
		}
		if diff := cmp.Diff(prepared, out, exCmp); diff != "" {
			t.Errorf("Expand's table is not in canonical form (-Prepare +Expand):\n%s", diff)
		}
		for _, vs := range out {
			if !exAnnounced[vs.Addr] {
				t.Errorf("Expand carries %v, not announced here", vs.Key)
			}
		}

		slices.Reverse(in.Services)
		slices.Reverse(in.Slices)
		out2, problems2 := Expand(in)
		if diff := cmp.Diff(out, out2, exCmp); diff != "" {
			t.Errorf("table depends on input order (-forward +reversed):\n%s", diff)
		}
		if diff := cmp.Diff(problemTexts(problems), problemTexts(problems2)); diff != "" {
			t.Errorf("problems depend on input order (-forward +reversed):\n%s", diff)
		}
	})
}

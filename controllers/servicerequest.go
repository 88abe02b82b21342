package controllers

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/internal/ipam"
)

// Service annotations, read under both the current and the legacy prefix so
// manifests written for either MetalLB generation apply unchanged.
const (
	annLoadBalancerIPs   = "loadBalancerIPs"
	annAddressPool       = "address-pool"
	annAllowSharedIP     = "allow-shared-ip"
	annAllocatedFromPool = "metallb.io/ip-allocated-from-pool"
)

var annotationPrefixes = []string{"metallb.io/", "metallb.universe.tf/"}

// annotation returns the first of metallb.io/NAME and
// metallb.universe.tf/NAME that is set, and the full key it was found under.
func annotation(svc *corev1.Service, name string) (value, key string) {
	for _, p := range annotationPrefixes {
		if v, ok := svc.Annotations[p+name]; ok {
			return strings.TrimSpace(v), p + name
		}
	}
	return "", ""
}

// serviceKey is the allocator's owner key for a Service.
func serviceKey(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// wantedRequest is what a Service asks for, before the candidate pools are
// chosen (that needs the resolved configuration).
type wantedRequest struct {
	ipam.Request
	// Pool is the pool pinned by the address-pool annotation, if any.
	Pool string
}

// requestFor turns a Service into an allocation request. Errors name the
// field and value the user must fix.
func requestFor(svc *corev1.Service) (wantedRequest, error) {
	w := wantedRequest{Request: ipam.Request{Service: serviceKey(svc)}}
	w.Pool, _ = annotation(svc, annAddressPool)
	w.SharingKey, _ = annotation(svc, annAllowSharedIP)

	ips, key := annotation(svc, annLoadBalancerIPs)
	switch {
	case key != "" && svc.Spec.LoadBalancerIP != "":
		return w, fmt.Errorf("both annotation %s and spec.loadBalancerIP are set: use one", key)
	case key != "":
		for _, s := range strings.Split(ips, ",") {
			// A zone (fe80::1%eth0) names a host's interface, never a
			// service address.
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil || a.Zone() != "" {
				return w, fmt.Errorf("annotation %s: %q is not an IP address", key, s)
			}
			w.Addresses = append(w.Addresses, a.Unmap())
		}
		if len(w.Addresses) > 2 || (len(w.Addresses) == 2 && w.Addresses[0].Is4() == w.Addresses[1].Is4()) {
			return w, fmt.Errorf("annotation %s: %q must hold at most one address per family", key, ips)
		}
	case svc.Spec.LoadBalancerIP != "":
		a, err := netip.ParseAddr(svc.Spec.LoadBalancerIP)
		if err != nil || a.Zone() != "" {
			return w, fmt.Errorf("spec.loadBalancerIP: %q is not an IP address", svc.Spec.LoadBalancerIP)
		}
		w.Addresses = []netip.Addr{a.Unmap()}
	}

	w.Families, w.RequireAll = familiesFor(svc)
	if len(w.Addresses) > 0 {
		// Requested addresses decide the families, whatever the policy says.
		w.Families = nil
		for _, a := range w.Addresses {
			w.Families = append(w.Families, ipam.FamilyOf(a))
		}
		w.RequireAll = true
	}
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		w.Ports = append(w.Ports, ipam.Port{Port: p.Port, Protocol: proto})
	}
	w.Compat = compatKey(svc)
	return w, nil
}

// familiesFor reads spec.ipFamilyPolicy and spec.ipFamilies: SingleStack gets
// the first family, PreferDualStack both when a pool offers both,
// RequireDualStack both or nothing.
func familiesFor(svc *corev1.Service) (families []ipam.Family, requireAll bool) {
	for _, f := range svc.Spec.IPFamilies {
		families = append(families, familyOf(f))
	}
	if len(families) == 0 {
		families = []ipam.Family{ipam.IPv4}
	}
	policy := corev1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	switch policy {
	case corev1.IPFamilyPolicyRequireDualStack, corev1.IPFamilyPolicyPreferDualStack:
		if len(families) == 1 {
			families = append(families, otherFamily(families[0]))
		}
		return families, policy == corev1.IPFamilyPolicyRequireDualStack
	default:
		return families[:1], true
	}
}

func familyOf(f corev1.IPFamily) ipam.Family {
	if f == corev1.IPv6Protocol {
		return ipam.IPv6
	}
	return ipam.IPv4
}

func otherFamily(f ipam.Family) ipam.Family {
	if f == ipam.IPv4 {
		return ipam.IPv6
	}
	return ipam.IPv4
}

// compatKey encodes what must agree between Services sharing an address:
// with externalTrafficPolicy Local the traffic lands only where the
// endpoints are, so sharers must select the same pods; with Cluster any
// sharers are fine.
func compatKey(svc *corev1.Service) string {
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		return "local:" + labels.SelectorFromSet(svc.Spec.Selector).String()
	}
	return "cluster"
}

// servedBy reports whether the controller with lbClass owns svc's external
// addresses.
func servedBy(svc *corev1.Service, lbClass string) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return lbClass == ""
	}
	return *svc.Spec.LoadBalancerClass == lbClass
}

// ingressAddrs returns the addresses published in svc's status.
func ingressAddrs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

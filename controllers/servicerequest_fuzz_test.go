package controllers

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/internal/ipam"
)

// FuzzRequestFor checks the reading of a Service's address annotations and
// spec.loadBalancerIP, whatever a user writes: no panic; an error names the
// field to fix; an accepted request holds at most one plain (unmapped,
// zoneless) address per family, its families are those of its addresses,
// and writing its addresses back as the annotation gives the same request.
func FuzzRequestFor(f *testing.F) {
	for _, seed := range [][4]string{
		{"metallb.io/", "172.25.254.50", "", "lab"},
		{"metallb.universe.tf/", "172.25.254.50, fd00:254::50", "", ""},
		{"", "", "172.25.254.51", ""},
		{"metallb.io/", "::ffff:172.25.254.50", "", ""},
		{"metallb.io/", "172.25.254.50,172.25.254.51", "", ""},
		{"metallb.io/", "fe80::1%eth0", "", ""},
		{"metallb.io/", "172.25.254.50", "172.25.254.50", ""},
		{"metallb.io/", "not-an-ip,", "", " pool "},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, prefix, ips, specIP, pool string) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", Annotations: map[string]string{}}}
		if prefix == "metallb.io/" || prefix == "metallb.universe.tf/" {
			svc.Annotations[prefix+annLoadBalancerIPs] = ips
		}
		svc.Annotations["metallb.io/"+annAddressPool] = pool
		svc.Spec.LoadBalancerIP = specIP

		w, err := requestFor(svc)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, "annotation metallb") && !strings.Contains(msg, "spec.loadBalancerIP") {
				t.Errorf("requestFor error %q names no field", msg)
			}
			return
		}
		if w.Pool != strings.TrimSpace(pool) {
			t.Errorf("pool %q read as %q", pool, w.Pool)
		}
		if len(w.Addresses) > 2 || (len(w.Addresses) == 2 && w.Addresses[0].Is4() == w.Addresses[1].Is4()) {
			t.Fatalf("requestFor(%q, %q) = addresses %v, want at most one per family", ips, specIP, w.Addresses)
		}
		var families []ipam.Family
		for _, a := range w.Addresses {
			if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
				t.Errorf("requestFor(%q, %q) = address %v, want a plain address", ips, specIP, a)
			}
			families = append(families, ipam.FamilyOf(a))
		}
		if len(w.Addresses) == 0 {
			return
		}
		if !cmp.Equal(families, w.Families) || !w.RequireAll {
			t.Errorf("requestFor(%q, %q) = families %v (all %v), want %v required", ips, specIP, w.Families, w.RequireAll, families)
		}
		written := make([]string, len(w.Addresses))
		for i, a := range w.Addresses {
			written[i] = a.String()
		}
		again := svc.DeepCopy()
		again.Spec.LoadBalancerIP = ""
		again.Annotations = map[string]string{"metallb.io/" + annLoadBalancerIPs: strings.Join(written, ","), "metallb.io/" + annAddressPool: pool}
		w2, err := requestFor(again)
		if err != nil {
			t.Fatalf("addresses %v written back: %v", written, err)
		}
		if diff := cmp.Diff(w, w2, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("request after writing the addresses back (-first +again):\n%s", diff)
		}
	})
}

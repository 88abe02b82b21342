package crd_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// TestRangeOrderRuleMatchesNetip checks the CEL rule that refuses reversed
// start-end ranges against netip's ordering, on random pairs that share a
// random number of leading bits, so every bit position decides some pair.
func TestRangeOrderRuleMatchesNetip(t *testing.T) {
	v := schemaValidators(t)["IPAddressPool/v1beta1"]
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		size := 4
		if i%2 == 1 {
			size = 16
		}
		a := make([]byte, size)
		for j := range a {
			a[j] = byte(rng.UintN(256))
		}
		b := append([]byte(nil), a...)
		// Flip one bit, then randomise everything after it.
		bit := rng.IntN(size * 8)
		b[bit/8] ^= 0x80 >> (bit % 8)
		for j := bit + 1; j < size*8; j++ {
			if rng.IntN(2) == 0 {
				b[j/8] ^= 0x80 >> (j % 8)
			}
		}
		start, _ := netip.AddrFromSlice(a)
		end, _ := netip.AddrFromSlice(b)
		if start.Is4In6() || end.Is4In6() {
			continue
		}
		entry := start.String() + "-" + end.String()
		errs := v.validate(t, manifest("v1beta1", "IPAddressPool", "p", "ns", "addresses: [\""+entry+"\"]"))
		gotReversed := len(errs) > 0 && strings.Contains(errs.ToAggregate().Error(), "is reversed")
		if wantReversed := start.Compare(end) > 0; gotReversed != wantReversed {
			t.Errorf("range %s: reported reversed = %t, want %t (errors: %v)", entry, gotReversed, wantReversed, errs)
		}
		if len(errs) > 0 && !gotReversed {
			t.Errorf("range %s: unexpected errors %v", entry, errs)
		}
	}
}

// TestV1beta1PeerIsSubsetOfV1beta2 checks what lets BGPPeer use conversion
// strategy None: every v1beta1 field exists in v1beta2 with the same type.
func TestV1beta1PeerIsSubsetOfV1beta2(t *testing.T) {
	for _, crd := range loadCRDs(t) {
		if crd.Spec.Names.Kind != "BGPPeer" {
			continue
		}
		specs := map[string]map[string]string{}
		for _, v := range crd.Spec.Versions {
			types := map[string]string{}
			for name, p := range v.Schema.OpenAPIV3Schema.Properties["spec"].Properties {
				types[name] = p.Type
			}
			specs[v.Name] = types
		}
		if len(specs["v1beta1"]) == 0 || len(specs["v1beta2"]) == 0 {
			t.Fatalf("BGPPeer versions = %v, want v1beta1 and v1beta2", specs)
		}
		for name, typ := range specs["v1beta1"] {
			if got, ok := specs["v1beta2"][name]; !ok || got != typ {
				t.Errorf("v1beta1 spec.%s is %q, v1beta2 has %q", name, typ, got)
			}
		}
		if crd.Spec.Conversion != nil && crd.Spec.Conversion.Strategy != "None" {
			t.Errorf("conversion strategy = %s, want None", crd.Spec.Conversion.Strategy)
		}
		return
	}
	t.Fatal("no BGPPeer CRD")
}

package policy

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func TestSelectorListsOverlap(t *testing.T) {
	tests := []struct {
		name string
		a, b []string // selector strings; nil = everything
		want bool
	}{
		{name: "both empty mean all nodes", want: true},
		{name: "empty and one", a: nil, b: []string{"zone=a"}, want: true},
		{name: "same label same value", a: []string{"zone=a"}, b: []string{"zone=a"}, want: true},
		{name: "same label other value", a: []string{"zone=a"}, b: []string{"zone=b"}, want: false},
		{name: "different labels can both hold", a: []string{"zone=a"}, b: []string{"rack=1"}, want: true},
		{name: "in sets intersect", a: []string{"zone in (a,b)"}, b: []string{"zone in (b,c)"}, want: true},
		{name: "in sets disjoint", a: []string{"zone in (a,b)"}, b: []string{"zone in (c,d)"}, want: false},
		{name: "notin excludes the only value", a: []string{"zone=a"}, b: []string{"zone notin (a)"}, want: false},
		{name: "notin is met by an absent label", a: []string{"rack=1"}, b: []string{"zone notin (a)"}, want: true},
		{name: "exists versus does not exist", a: []string{"zone"}, b: []string{"!zone"}, want: false},
		{name: "exists with notin", a: []string{"zone"}, b: []string{"zone notin (a,b)"}, want: true},
		{name: "gt and lt leave room", a: []string{"rank>3"}, b: []string{"rank<5"}, want: true},
		{name: "gt and lt leave no room", a: []string{"rank>3"}, b: []string{"rank<4"}, want: false},
		{name: "gt and equals", a: []string{"rank>3"}, b: []string{"rank=7"}, want: true},
		{name: "gt and equals below", a: []string{"rank>3"}, b: []string{"rank=2"}, want: false},
		{name: "gt the maximum", a: []string{"rank>9223372036854775807"}, b: nil, want: false},
		{name: "any pair of a list", a: []string{"zone=a", "zone=b"}, b: []string{"zone=c", "zone=b"}, want: true},
		{name: "no pair of a list", a: []string{"zone=a", "zone=b"}, b: []string{"zone=c", "zone=d"}, want: false},
	}
	parse := func(ss []string) []labels.Selector {
		var out []labels.Selector
		for _, s := range ss {
			sel, err := labels.Parse(s)
			if err != nil {
				t.Fatalf("labels.Parse(%q): %v", s, err)
			}
			out = append(out, sel)
		}
		return out
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := parse(tc.a), parse(tc.b)
			if got := selectorListsOverlap(a, b); got != tc.want {
				t.Errorf("selectorListsOverlap(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
			if got := selectorListsOverlap(b, a); got != tc.want {
				t.Errorf("selectorListsOverlap(%v, %v) = %v, want %v", tc.b, tc.a, got, tc.want)
			}
		})
	}
}

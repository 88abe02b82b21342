package policy

import (
	"fmt"
	"slices"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// parseSelectors converts API label selectors; field names the list
// ("spec.nodeSelectors") and on error badField names the bad entry
// ("spec.nodeSelectors[2]"), also for a duplicate (see duplicateSelector).
// An empty list stays empty (meaning "all").
func parseSelectors(field string, in []metav1.LabelSelector) (sels []labels.Selector, badField string, err error) {
	if len(in) == 0 {
		return nil, "", nil
	}
	if bad, err := duplicateSelector(field, in); err != nil {
		return nil, bad, err
	}
	out := make([]labels.Selector, 0, len(in))
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			return nil, fmt.Sprintf("%s[%d]", field, i), err
		}
		out = append(out, s)
	}
	// Sorted so that equal configurations resolve to equal Configs whatever
	// the order the user wrote.
	slices.SortFunc(out, func(a, b labels.Selector) int {
		return compareStrings(a.String(), b.String())
	})
	return out, "", nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// selectorListsOverlap reports whether some label set is matched by both
// lists, where an empty list matches everything (nodeSelectors semantics).
// Peers are checked for duplicates with it: two sessions to one address
// conflict only on nodes both select.
func selectorListsOverlap(a, b []labels.Selector) bool {
	if len(a) == 0 {
		a = []labels.Selector{labels.Everything()}
	}
	if len(b) == 0 {
		b = []labels.Selector{labels.Everything()}
	}
	for _, x := range a {
		for _, y := range b {
			if selectorsOverlap(x, y) {
				return true
			}
		}
	}
	return false
}

// selectorsOverlap builds, key by key, a label set meant to satisfy both
// selectors' requirements and then checks it with the selectors themselves,
// so an answer of true is always backed by a real witness. Requirements on
// different keys are independent, and for each key the candidates tried
// cover every way a value can satisfy the operators, so a false answer means
// no node can match both.
func selectorsOverlap(a, b labels.Selector) bool {
	ra, okA := a.Requirements()
	rb, okB := b.Requirements()
	if !okA || !okB {
		return false
	}
	byKey := map[string][]labels.Requirement{}
	var keys []string
	for _, r := range append(slices.Clone(ra), rb...) {
		if _, seen := byKey[r.Key()]; !seen {
			keys = append(keys, r.Key())
		}
		byKey[r.Key()] = append(byKey[r.Key()], r)
	}
	witness := labels.Set{}
	for _, k := range keys {
		if v, present, ok := valueFor(k, byKey[k]); !ok {
			return false
		} else if present {
			witness[k] = v
		}
	}
	return a.Matches(witness) && b.Matches(witness)
}

// valueFor finds a value for key k (or its absence, present=false) meeting
// every requirement in reqs; ok is false when none exists.
func valueFor(k string, reqs []labels.Requirement) (value string, present, ok bool) {
	meets := func(v string, present bool) bool {
		set := labels.Set{}
		if present {
			set[k] = v
		}
		for i := range reqs {
			if !reqs[i].Matches(set) {
				return false
			}
		}
		return true
	}
	if meets("", false) {
		return "", false, true
	}
	var candidates []string
	var lo, hi int64 = -1 << 63, 1<<63 - 1
	bounded := false
	excluded := 0
	for i := range reqs {
		r := &reqs[i]
		switch r.Operator() {
		case selection.In, selection.Equals, selection.DoubleEquals:
			candidates = append(candidates, r.ValuesUnsorted()...)
		case selection.NotIn, selection.NotEquals:
			excluded += len(r.ValuesUnsorted())
		case selection.GreaterThan, selection.LessThan:
			vals := r.ValuesUnsorted()
			if len(vals) != 1 {
				return "", false, false
			}
			n, err := strconv.ParseInt(vals[0], 10, 64)
			if err != nil {
				return "", false, false
			}
			bounded = true
			if r.Operator() == selection.GreaterThan {
				if n == 1<<63-1 {
					return "", false, false
				}
				lo = max(lo, n+1)
			} else {
				if n == -1<<63 {
					return "", false, false
				}
				hi = min(hi, n-1)
			}
		}
	}
	if bounded {
		// Enough integers from the range to get past every excluded value.
		for n := lo; n <= hi && len(candidates) <= excluded+len(reqs); n++ {
			candidates = append(candidates, strconv.FormatInt(n, 10))
			if n == hi {
				break
			}
		}
	} else {
		for i := 0; i <= excluded; i++ {
			candidates = append(candidates, "v"+strconv.Itoa(i))
		}
	}
	for _, c := range candidates {
		if meets(c, true) {
			return c, true, true
		}
	}
	return "", false, false
}

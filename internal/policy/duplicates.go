package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The CRDs refuse duplicate list entries at apply time; these checks repeat
// them for objects that bypassed that (older CRDs, tests, dry runs), with
// MetalLB's notion of "the same": strings compare equal, selectors compare
// by their labels and expressions, in their order, with each expression's
// values as a set.

// duplicateError reads as its reason alone and is ErrDuplicate to errors.Is.
type duplicateError string

func duplicate(reason string) error { return duplicateError(reason) }

func (e duplicateError) Error() string { return string(e) }

func (e duplicateError) Unwrap() error { return ErrDuplicate }

// duplicateName finds the first entry of list equal to an earlier one and
// names it: field "spec.peers[2]", value "tor", and the reason.
func duplicateName(field string, list []string) (string, string, error) {
	first := make(map[string]int, len(list))
	for i, s := range list {
		if j, dup := first[s]; dup {
			return fmt.Sprintf("%s[%d]", field, i), s, duplicate(fmt.Sprintf("is listed more than once (also %s[%d])", field, j))
		}
		first[s] = i
	}
	return "", "", nil
}

// duplicateSelector finds, in a list of selectors, an expression or value
// repeated inside one selector, or a selector equal to an earlier one. It
// returns the field at fault ("spec.nodeSelectors[1]") and the reason.
func duplicateSelector(field string, in []metav1.LabelSelector) (string, error) {
	first := make(map[string]int, len(in))
	for i := range in {
		entry := fmt.Sprintf("%s[%d]", field, i)
		exprs := make(map[string]int, len(in[i].MatchExpressions))
		for k, e := range in[i].MatchExpressions {
			exprField := fmt.Sprintf("%s.matchExpressions[%d]", entry, k)
			if f, v, err := duplicateName(exprField+".values", e.Values); err != nil {
				return f, duplicate(fmt.Sprintf("%q %s", v, err))
			}
			key := expressionKey(e)
			if j, dup := exprs[key]; dup {
				return exprField, duplicate(fmt.Sprintf("repeats %s.matchExpressions[%d]", entry, j))
			}
			exprs[key] = k
		}
		key := selectorKey(&in[i])
		if j, dup := first[key]; dup {
			return entry, duplicate(fmt.Sprintf("is the same selector as %s[%d]", field, j))
		}
		first[key] = i
	}
	return "", nil
}

// expressionKey is one match expression with its values sorted.
func expressionKey(e metav1.LabelSelectorRequirement) string {
	vals := slices.Sorted(slices.Values(e.Values))
	return fmt.Sprintf("%q %s %q", e.Key, e.Operator, vals)
}

// selectorKey is a selector in canonical text: labels sorted by key,
// expressions in their order with sorted values.
func selectorKey(s *metav1.LabelSelector) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		fmt.Fprintf(&b, "%q=%q,", k, s.MatchLabels[k])
	}
	b.WriteByte('|')
	for _, e := range s.MatchExpressions {
		b.WriteString(expressionKey(e))
		b.WriteByte(',')
	}
	return b.String()
}

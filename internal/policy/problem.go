package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors for problems Resolve reports, checked with errors.Is on a
// Problem (or on Problem.Err).
var (
	// ErrInvalidField: a value inside one object is out of range, malformed
	// or contradicts another field of the same object.
	ErrInvalidField = errors.New("invalid value")
	// ErrOverlap: an address range of a pool overlaps one already in use.
	ErrOverlap = errors.New("overlapping addresses")
	// ErrDuplicate: another object already uses this name or identity.
	ErrDuplicate = errors.New("duplicate")
	// ErrMissingReference: the object names another object that does not
	// exist (or was itself left out).
	ErrMissingReference = errors.New("missing reference")
	// ErrUnknownCommunity: a community is neither a valid literal nor an
	// alias defined by a Community object.
	ErrUnknownCommunity = errors.New("unknown community alias")
	// ErrSecret: a peer's password Secret is missing, of the wrong type or
	// lacks the password key.
	ErrSecret = errors.New("unusable password secret")
	// ErrIncompatible: two objects are each valid but cannot be used
	// together (e.g. an aggregation length broader than a pool's prefix).
	ErrIncompatible = errors.New("incompatible objects")
)

// Problem is one thing Resolve found wrong. It names the object left out or
// at fault (Kind, Namespace, Name), the field, and where another object is
// involved, that object as Other ("IPAddressPool metallb-system/a").
//
// LeftOut says whether the object is absent from the Config. When false the
// object is kept with the offending part removed (see Resolve for which rules
// do that).
//
// Dangling marks a reference to an object that does not exist, or not in a
// usable form: the referring object is kept, the name selects nothing until
// the object appears (or is mended), and then the reference resolves with no
// change to the referring object. It is a warning, not an invalid
// configuration: `kubectl apply -f dir/` creates objects in any order, and
// MetalLB accepts such names too. Dangling problems always have LeftOut
// false.
//
// Message is a complete sentence for users, Events and ConfigurationState;
// it never contains a secret value.
type Problem struct {
	Kind      string
	Namespace string
	Name      string
	Field     string
	Other     string
	LeftOut   bool
	Dangling  bool
	Err       error
	Message   string
}

// Error returns Message, so a Problem can travel as an error.
func (p Problem) Error() string { return p.Message }

// Unwrap exposes Err, so errors.Is(problem, ErrOverlap) works.
func (p Problem) Unwrap() error { return p.Err }

// ref names an object the way messages do: "Kind namespace/name".
type ref struct {
	kind, namespace, name string
}

func (r ref) String() string {
	if r.namespace == "" {
		return r.kind + " " + r.name
	}
	return r.kind + " " + r.namespace + "/" + r.name
}

// problems collects Problems in the order they are found.
type problems []Problem

// add records a problem about obj. value is quoted into the message when not
// empty; pass "" for values that must not be shown (passwords). detail is
// the rest of the sentence; err carries the sentinel.
func (ps *problems) add(obj ref, leftOut bool, field, value string, other ref, err error, detail string) {
	var b strings.Builder
	b.WriteString(obj.String())
	b.WriteString(": ")
	if field != "" {
		b.WriteString(field)
		b.WriteByte(' ')
	}
	if value != "" {
		b.WriteString(strconv.Quote(value))
		b.WriteByte(' ')
	}
	b.WriteString(detail)
	otherName := ""
	if other.kind != "" {
		otherName = other.String()
	}
	if leftOut {
		b.WriteString("; left out of the configuration")
	}
	*ps = append(*ps, Problem{
		Kind:      obj.kind,
		Namespace: obj.namespace,
		Name:      obj.name,
		Field:     field,
		Other:     otherName,
		LeftOut:   leftOut,
		Err:       err,
		Message:   b.String(),
	})
}

// dangling records a reference from obj to other, an object that does not
// exist or was left out; obj is kept.
func (ps *problems) dangling(obj ref, field, value string, other ref, detail string) {
	ps.add(obj, false, field, value, other, ErrMissingReference, detail)
	(*ps)[len(*ps)-1].Dangling = true
}

// invalid records an in-object problem that leaves the object out.
func (ps *problems) invalid(obj ref, field, value string, err error) {
	ps.add(obj, true, field, value, ref{}, fmt.Errorf("%w: %w", ErrInvalidField, err), err.Error())
}

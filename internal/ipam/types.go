package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// Family is an IP address family.
type Family uint8

// The families, numbered as people say them so a Family prints sensibly
// even as a bare integer. The zero value is no family.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// FamilyOf returns the family of a (IPv4 for IPv4-mapped IPv6 addresses,
// which the allocator always unmaps).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Pool is an address pool as the allocator sees it.
type Pool struct {
	Name string
	// Ranges may overlap and may be huge (an IPv6 /64 is normal): the
	// allocator never enumerates them.
	Ranges []netipx.IPRange
	// AvoidBuggyIPs leaves out IPv4 addresses ending in .0 and .255: they are
	// not part of the pool at all, neither for allocation nor for requests.
	AvoidBuggyIPs bool
}

// Port is a service port; two services sharing an address must not use the
// same Port.
type Port struct {
	Port     int32
	Protocol string // "TCP", "UDP" or "SCTP"; empty means TCP
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Request is what a service asks of the allocator.
type Request struct {
	// Service is the owner key, "namespace/name".
	Service string
	// Families are the wanted families, one or two, in preference order. The
	// returned addresses follow this order.
	Families []Family
	// RequireAll fails the request unless every family gets an address. When
	// false and two families are wanted, the service gets what one pool can
	// give (at least one family), preferring a pool that gives both.
	RequireAll bool
	// Addresses are specific addresses asked for, at most one per family. When
	// set, the assignment is exactly these addresses, from the configured pool
	// that contains all of them.
	Addresses []netip.Addr
	// Pools are the candidate pools in order of preference. For automatic
	// allocation they are the only pools used; with Addresses they only
	// restrict (when non-empty) which pool the addresses may come from.
	Pools []string
	// Ports the service exposes, checked against the other services of a
	// shared address.
	Ports []Port
	// SharingKey lets services with the same key share an address; "" means
	// the service wants an address of its own.
	SharingKey string
	// Compat must be equal for services sharing an address. The caller
	// encodes in it whatever else must agree (traffic policy, selector).
	Compat string
}

// Assignment is the addresses a service holds and the pool they come from.
type Assignment struct {
	Pool      string
	Addresses []netip.Addr
}

// PoolStats counts a pool's addresses. Counts saturate at math.MaxUint64 (an
// IPv6 /64 has one address more than that). Addresses left out by
// AvoidBuggyIPs count neither as assigned nor as available. A shared address
// counts once.
type PoolStats struct {
	AssignedIPv4, AssignedIPv6   uint64
	AvailableIPv4, AvailableIPv6 uint64
}

// Sentinel errors, checked with errors.Is. The errors returned carry the
// details a user needs (pool names, addresses, holders).
var (
	// ErrPoolExhausted: every candidate pool offering the family is full.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrAddressInUse: a requested address is held by a service that does
	// not share it (see AddressInUseError).
	ErrAddressInUse = errors.New("address already in use")
	// ErrNotInAnyPool: a requested address is in no configured pool, or the
	// requested addresses are not all in one pool.
	ErrNotInAnyPool = errors.New("address not in any pool")
	// ErrPoolNotAllowed: the requested address lies in a pool that is not
	// among the request's candidate pools.
	ErrPoolNotAllowed = errors.New("address pool not allowed for the service")
	// ErrUnknownPool: the request names a pool that is not configured.
	ErrUnknownPool = errors.New("unknown address pool")
	// ErrNoPool: the request has no candidate pool at all.
	ErrNoPool = errors.New("no address pool for the service")
	// ErrFamilyUnavailable: no candidate pool offers the wanted family (or
	// both families, when all are required).
	ErrFamilyUnavailable = errors.New("IP family unavailable")
	// ErrIncompatibleSharing: a requested address is held by services with
	// which sharing is not allowed (see SharingError).
	ErrIncompatibleSharing = errors.New("address cannot be shared")
	// ErrMismatch: addresses being restored do not match the request (other
	// addresses requested, a required family missing).
	ErrMismatch = errors.New("assignment does not match the request")
	// ErrInvalidRequest: a malformed request (no service, bad families,
	// two requested addresses of one family).
	ErrInvalidRequest = errors.New("invalid request")
)

// AddressInUseError says which services hold a requested address that they
// do not share. It matches ErrAddressInUse.
type AddressInUseError struct {
	Addr netip.Addr
	By   []string // holders, sorted
}

func (e *AddressInUseError) Error() string {
	return fmt.Sprintf("address %s is already used by %s, which does not share it", e.Addr, quoteList(e.By))
}

// Is makes errors.Is(err, ErrAddressInUse) true.
func (e *AddressInUseError) Is(target error) bool { return target == ErrAddressInUse }

// SharingError says why a requested address held by other services with a
// sharing key cannot be shared with the requester. It matches
// ErrIncompatibleSharing.
type SharingError struct {
	Addr   netip.Addr
	By     []string // holders, sorted
	Reason string
}

func (e *SharingError) Error() string {
	return fmt.Sprintf("address %s is used by %s and cannot be shared: %s", e.Addr, quoteList(e.By), e.Reason)
}

// Is makes errors.Is(err, ErrIncompatibleSharing) true.
func (e *SharingError) Is(target error) bool { return target == ErrIncompatibleSharing }

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

func poolWord(names []string) string {
	if len(names) == 1 {
		return "pool " + quoteList(names)
	}
	return "pools " + quoteList(names)
}

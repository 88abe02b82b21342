// Package ipam assigns load-balancer addresses from pools to services.
//
// It is a pure core: it knows pools, services (by "namespace/name" key),
// families, ports and sharing keys, and nothing of Kubernetes. The controller
// turns Services and IPAddressPools into Requests and Pools, and turns the
// answers into status, annotations and Events.
//
// # Model
//
// A Pool is a set of address ranges, per family. With AvoidBuggyIPs, IPv4
// addresses ending in .0 or .255 are not part of the pool at all: they are
// never handed out, cannot be requested from that pool, and are not counted.
//
// A service holds one Assignment: one or two addresses (one per family) and
// the pool they come from. All addresses of an assignment are in one pool.
// An address is held by one service, or by several that share it legally:
// they all have the same non-empty SharingKey, the same Compat, and no
// port+protocol in common.
//
// For each pool and family the allocator keeps the held addresses as maximal
// runs in an ordered tree (a treap keyed by run start, addresses as 128-bit
// integers). Runs are maximal in the pool's own order of eligible addresses,
// so addresses skipped by AvoidBuggyIPs and gaps between ranges never split a
// run. The lowest free address is then one tree lookup: the pool's first
// eligible address, or the address right after the run starting there. Taking
// or freeing an address merges or splits at most two runs. Every operation
// is O(log runs) and never depends on the size of the pool, so an IPv6 /64
// (or larger) pool costs the same as a /24; counts are kept as running
// totals, with pool sizes in 128-bit arithmetic, saturated to uint64 only
// when reported.
//
// # Rules
//
// Requested addresses (Request.Addresses): the assignment is exactly those
// addresses, from the first pool (in Request.Pools order, or by name when
// Pools is empty) that contains all of them. Each must be free, or held only
// by services it may legally share with; otherwise the error says who holds
// it and why sharing is refused (*AddressInUseError, *SharingError).
//
// Automatic allocation: for each candidate pool, in order, and each wanted
// family, the pool offers an address held by a compatible service with the
// same sharing key if there is one (the lowest such), else its lowest free
// address. The chosen pool is the best by, in turn: it shares an address
// (the sharing key asks for exactly that), it gives more of the wanted
// families, it gives the first (preferred) family, it comes first. With
// RequireAll, or a single family, only pools giving every family qualify.
//
// Stability: Allocate and Assign return the current assignment unchanged
// while it still satisfies the request (families, requested addresses, pool
// among the candidates, sharing still legal), even if a better one would be
// chosen now; a PreferDualStack service that got one family keeps it. When it
// no longer satisfies, the old assignment is released before the new one is
// made, so a failure leaves the service with nothing (a malformed request is
// rejected before anything is released).
//
// Sharing compares ports as port+protocol (an empty protocol is TCP), so a
// TCP and a UDP service on port 53 may share an address.
//
// Pool changes (SetPools) never take addresses away: a service whose
// addresses left every pool becomes an orphan, reported to the caller, and
// its addresses stay held until it is released or allocated anew.
//
// # Cost
//
// Allocate, Assign and Release cost O(log runs) tree work plus a few map
// operations, whatever the number of services or the size of the pools
// (pools, candidate pools and the services sharing one key are assumed few).
// Stats is O(1). SetPools with unchanged pools is O(pools + orphans); a new
// or changed pool costs a pass over the held addresses. An Allocator is safe
// for concurrent use; one mutex serializes the calls.
//
// # Determinism
//
// The same sequence of calls gives the same answers, whatever the Go map
// iteration order, the tree's shape or the machine: choices depend only on
// address order, the request's pool order and, where no order is given, pool
// names. So a controller that replays the same Services in the same order
// after a restart reproduces the same addresses, and Assign restores the
// addresses it observed without looking at the pool order at all.
package ipam

// Package forwarder carries service traffic from the addresses this node
// announces to the endpoints behind them, with either kernel IPVS or
// nftables. The speaker hands it the whole desired table on every change;
// each backend reads back what the kernel holds, diffs, and applies only the
// difference.
package forwarder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Table is what the speaker needs from a forwarding backend: make the kernel
// carry exactly these virtual services. Sync is level-triggered: any service
// the kernel holds that is not in the slice is removed.
type Table interface {
	Sync(ctx context.Context, services []VirtualService) error
}

// Cleaner is a Table that can take back what it installed, for a speaker
// that stops cleanly.
type Cleaner interface {
	// Cleanup removes the virtual services, rules and addresses this Table
	// installed, provided the kernel still holds exactly what its last
	// successful Sync left. Otherwise another program (a successor speaker)
	// has taken over since, and Cleanup leaves everything in place and
	// returns ErrChangedSinceSync. A Table that never synced removes
	// nothing.
	Cleanup(ctx context.Context) error
}

// Protocol is the transport protocol of a virtual service.
type Protocol string

// Protocols a virtual service can carry.
const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Scheduler names, as IPVS spells them. The nftables backend approximates
// them; see nftables.go.
const (
	RoundRobin              = "rr"
	WeightedRoundRobin      = "wrr"
	LeastConnection         = "lc"
	WeightedLeastConnection = "wlc"
	SourceHashing           = "sh"
	DestinationHashing      = "dh"
	ShortestExpectedDelay   = "sed"
	NeverQueue              = "nq"
	MaglevHashing           = "mh"

	DefaultScheduler = RoundRobin
	DefaultWeight    = 1
)

const (
	maxWeight = 65535
	// IPVS keeps persistence timeouts in whole seconds; one day is a
	// generous ceiling that still fits every representation used here.
	maxAffinity         = 86400 * time.Second
	affinityGranularity = time.Second
)

var schedulers = map[string]bool{
	RoundRobin: true, WeightedRoundRobin: true, LeastConnection: true,
	WeightedLeastConnection: true, SourceHashing: true, DestinationHashing: true,
	ShortestExpectedDelay: true, NeverQueue: true, MaglevHashing: true,
}

// Sentinel errors for services the forwarder refuses; Sync wraps them with
// the service they concern and still applies every valid service.
var (
	ErrInvalidService   = errors.New("invalid virtual service")
	ErrUnknownScheduler = errors.New("unknown scheduler")
	ErrDuplicateService = errors.New("duplicate virtual service")
	ErrChangedSinceSync = errors.New("forwarding state changed by another program since the last sync")
)

// Key identifies a virtual service: what a client connects to.
type Key struct {
	Addr     netip.Addr
	Port     uint16
	Protocol Protocol
}

func (k Key) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), k.Protocol)
}

// Backend is a real server behind a virtual service.
type Backend struct {
	Addr netip.Addr
	Port uint16
	// Weight follows IPVS: 0 receives no new connections (a terminating
	// endpoint being drained) while established ones continue; the speaker
	// gives ready endpoints DefaultWeight.
	Weight int
}

// AddrPort is the backend's identity within its service.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

// VirtualService is one (address, port, protocol) and the backends that
// serve it.
type VirtualService struct {
	Key
	// Scheduler is an IPVS scheduler name; empty means DefaultScheduler.
	Scheduler string
	// Affinity > 0 keeps a client (by source address) on one backend:
	// IPVS persistence with this timeout (whole seconds).
	Affinity time.Duration
	Backends []Backend
	// Masquerade rewrites the client's source address to the node's, so
	// replies come back through the node from any backend. False (for
	// externalTrafficPolicy Local) preserves the client's address.
	Masquerade bool
}

// normalize returns the canonical form two equal services share: default
// scheduler filled in, unmapped addresses, backends sorted, affinity
// truncated to what the kernel stores.
func (vs VirtualService) normalize() VirtualService {
	out := vs
	out.Addr = vs.Addr.Unmap()
	if out.Scheduler == "" {
		out.Scheduler = DefaultScheduler
	}
	out.Affinity = vs.Affinity.Truncate(affinityGranularity)
	out.Backends = make([]Backend, len(vs.Backends))
	for i, b := range vs.Backends {
		b.Addr = b.Addr.Unmap()
		out.Backends[i] = b
	}
	slices.SortFunc(out.Backends, func(a, b Backend) int { return a.AddrPort().Compare(b.AddrPort()) })
	return out
}

func (vs VirtualService) validate() error {
	switch {
	case !vs.Addr.IsValid():
		return fmt.Errorf("%w: no address", ErrInvalidService)
	case vs.Port == 0:
		return fmt.Errorf("%w %s: port 0", ErrInvalidService, vs.Key)
	case vs.Protocol != TCP && vs.Protocol != UDP:
		return fmt.Errorf("%w %s: protocol %q", ErrInvalidService, vs.Key, vs.Protocol)
	case !schedulers[vs.Scheduler]:
		return fmt.Errorf("%w %s: %w %q", ErrInvalidService, vs.Key, ErrUnknownScheduler, vs.Scheduler)
	case vs.Affinity < 0 || vs.Affinity > maxAffinity:
		return fmt.Errorf("%w %s: affinity %v outside 0..%v", ErrInvalidService, vs.Key, vs.Affinity, maxAffinity)
	}
	for i, b := range vs.Backends {
		switch {
		case !b.Addr.IsValid() || b.Port == 0:
			return fmt.Errorf("%w %s: backend %v", ErrInvalidService, vs.Key, b.AddrPort())
		case b.Addr.Is4() != vs.Addr.Is4():
			return fmt.Errorf("%w %s: backend %v is another address family", ErrInvalidService, vs.Key, b.AddrPort())
		case b.Weight < 0 || b.Weight > maxWeight:
			return fmt.Errorf("%w %s: backend %v weight %d outside 0..%d", ErrInvalidService, vs.Key, b.AddrPort(), b.Weight, maxWeight)
		case i > 0 && vs.Backends[i-1].AddrPort() == b.AddrPort():
			return fmt.Errorf("%w %s: backend %v listed twice", ErrInvalidService, vs.Key, b.AddrPort())
		}
	}
	return nil
}

// Prepare canonicalises services and drops the ones a kernel could not
// carry. The error joins one wrapped sentinel per dropped service; the
// returned slice is sorted by key and safe to program even when err != nil.
func Prepare(services []VirtualService) ([]VirtualService, error) {
	out := make([]VirtualService, 0, len(services))
	var errs []error
	seen := make(map[Key]bool, len(services))
	for _, vs := range services {
		n := vs.normalize()
		if err := n.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[n.Key] {
			errs = append(errs, fmt.Errorf("%w %s", ErrDuplicateService, n.Key))
			continue
		}
		seen[n.Key] = true
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b VirtualService) int { return compareKeys(a.Key, b.Key) })
	return out, errors.Join(errs...)
}

func compareKeys(a, b Key) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

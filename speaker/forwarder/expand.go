package forwarder

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// SchedulerAnnotation on a Service chooses the scheduler of its virtual
// services; the value is an IPVS scheduler name (rr, wrr, lc, wlc, sh, dh,
// sed, nq, mh).
const SchedulerAnnotation = "ironlb.io/scheduler"

// DefaultAffinity is Kubernetes' default for
// sessionAffinityConfig.clientIP.timeoutSeconds (three hours).
const DefaultAffinity = 10800 * time.Second

// Sentinel errors of Expand's problems; the other ones it reports are
// ErrUnknownScheduler, ErrDuplicateService and ErrInvalidService.
var (
	ErrUnsupportedProtocol = errors.New("unsupported protocol")
	ErrInvalidAffinity     = errors.New("invalid session affinity timeout")
)

// ExpandInput is everything the desired forwarding table depends on.
type ExpandInput struct {
	// Node is this speaker's node name; externalTrafficPolicy Local keeps
	// only the endpoints on it.
	Node string
	// Services are the Services this node carries.
	Services []corev1.Service
	// Slices are the EndpointSlices of (at least) those Services.
	Slices []discoveryv1.EndpointSlice
	// Announced holds the service addresses (unmapped) this node announces:
	// the layer-2 owner's or the BGP-eligible node's. Other ingress
	// addresses of a Service belong to other nodes.
	Announced map[netip.Addr]bool
}

// Problem is something in a Service that the forwarder could not carry as
// written. Expand still carries the rest of that Service, so a problem is for
// telling the user (an Event on the Service), not for retrying.
type Problem struct {
	// Service is "namespace/name".
	Service string
	Err     error
}

func (p Problem) Error() string { return fmt.Sprintf("service %s: %v", p.Service, p.Err) }

func (p Problem) Unwrap() error { return p.Err }

// Expand turns the Services this node carries into the desired forwarding
// table, with the rules users of Kubernetes Services expect:
//
//   - one virtual service per announced ingress address, service port and
//     protocol (TCP, UDP; SCTP is reported and skipped);
//   - its backends are the endpoints of the Service's EndpointSlices (label
//     kubernetes.io/service-name) of the address's family, each at the port
//     of its slice whose name and protocol match the service port's, so a
//     named targetPort may resolve to different numbers on different pods;
//     an endpoint listed by several slices counts once, in its best state;
//   - ready endpoints get DefaultWeight; serving but terminating ones get
//     weight 0, which drains them, or DefaultWeight when no endpoint is ready
//     (the last pods of a rollout keep serving until they are gone);
//   - externalTrafficPolicy Local keeps only the endpoints on in.Node and
//     preserves the client's address; Cluster uses every endpoint and
//     masquerades;
//   - the scheduler comes from SchedulerAnnotation (default rr) and
//     sessionAffinity ClientIP becomes Affinity with
//     sessionAffinityConfig.clientIP.timeoutSeconds (default
//     DefaultAffinity).
//
// A virtual service without backends is kept: the address is announced
// here, and carrying it keeps its traffic away from the node's own sockets.
// When two Services claim the same address, port and protocol, the older one
// (then the first by name) keeps it. The result is in Prepare's canonical
// form and order, and problems are sorted; neither depends on input order.
func Expand(in ExpandInput) ([]VirtualService, []Problem) {
	slicesOf := indexSlices(in.Slices)

	// Age order decides who keeps a contested key; the name breaks ties so
	// that the result never depends on the informer's listing order.
	order := make([]*corev1.Service, len(in.Services))
	size := 0
	for i := range in.Services {
		order[i] = &in.Services[i]
		size += len(order[i].Spec.Ports) * len(order[i].Status.LoadBalancer.Ingress)
	}
	slices.SortFunc(order, func(a, b *corev1.Service) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})

	e := expansion{node: in.Node, out: make([]VirtualService, 0, size), rank: make([]int, 0, size)}
	for r, svc := range order {
		e.addrs = announcedAddrs(e.addrs[:0], svc, in.Announced)
		if len(e.addrs) == 0 {
			continue
		}
		e.service(r, svc, slicesOf[serviceRef{svc.Namespace, svc.Name}])
	}
	out := e.resolve(order)

	slices.SortStableFunc(e.problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Err.Error(), b.Err.Error()))
	})
	return out, e.problems
}

// expansion accumulates Expand's result.
type expansion struct {
	node string
	// out and rank are parallel: each virtual service and the age rank of
	// the Service it came from.
	out      []VirtualService
	rank     []int
	problems []Problem
	// Scratch space reused from one Service to the next.
	addrs     []netip.Addr
	endpoints []endpointAt
}

func (e *expansion) problem(svc *corev1.Service, err error) {
	e.problems = append(e.problems, Problem{Service: svc.Namespace + "/" + svc.Name, Err: err})
}

func (e *expansion) service(rank int, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) {
	scheduler, err := schedulerOf(svc)
	if err != nil {
		e.problem(svc, err)
	}
	affinity, err := affinityOf(svc)
	if err != nil {
		e.problem(svc, err)
	}
	local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal

	for _, sp := range svc.Spec.Ports {
		proto, ok := protocolOf(sp.Protocol)
		if !ok {
			e.problem(svc, fmt.Errorf("port %q (%d/%s): %w", sp.Name, sp.Port, sp.Protocol, ErrUnsupportedProtocol))
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			e.problem(svc, fmt.Errorf("%w: port %q number %d", ErrInvalidService, sp.Name, sp.Port))
			continue
		}
		// Backends depend on the family only: compute each once, and
		// give every further address of that family its own copy.
		var byFamily [2][]Backend
		var done [2]bool
		for _, addr := range e.addrs {
			f := familyIndex(addr)
			backends := byFamily[f]
			if done[f] {
				backends = slices.Clone(backends)
			} else {
				backends = e.backendsFor(eps, sp.Name, proto, addr.Is4(), local)
				byFamily[f], done[f] = backends, true
			}
			e.out = append(e.out, VirtualService{
				Key:        Key{Addr: addr, Port: uint16(sp.Port), Protocol: proto},
				Scheduler:  scheduler,
				Affinity:   affinity,
				Backends:   backends,
				Masquerade: !local,
			})
			e.rank = append(e.rank, rank)
		}
	}
}

// resolve sorts the table by key and keeps, of services sharing a key, the
// one from the oldest Service. It sorts indices rather than the services
// themselves, which are large.
func (e *expansion) resolve(order []*corev1.Service) []VirtualService {
	idx := make([]int32, len(e.out))
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		return cmp.Or(compareKeys(e.out[a].Key, e.out[b].Key), cmp.Compare(e.rank[a], e.rank[b]))
	})
	out := make([]VirtualService, 0, len(idx))
	kept := 0 // rank of the last service kept
	for _, i := range idx {
		vs := &e.out[i]
		if n := len(out); n > 0 && out[n-1].Key == vs.Key {
			owner := order[kept]
			e.problem(order[e.rank[i]], fmt.Errorf("%w %s: already carried for service %s/%s",
				ErrDuplicateService, vs.Key, owner.Namespace, owner.Name))
			continue
		}
		out = append(out, *vs)
		kept = e.rank[i]
	}
	return out
}

func familyIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// serviceRef names a Service without building a "namespace/name" string
// for every lookup.
type serviceRef struct{ namespace, name string }

// indexSlices groups EndpointSlices by the Service they belong to.
func indexSlices(all []discoveryv1.EndpointSlice) map[serviceRef][]*discoveryv1.EndpointSlice {
	out := make(map[serviceRef][]*discoveryv1.EndpointSlice, len(all))
	for i := range all {
		s := &all[i]
		owner, ok := s.Labels[discoveryv1.LabelServiceName]
		if !ok || s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		k := serviceRef{s.Namespace, owner}
		out[k] = append(out[k], s)
	}
	return out
}

// announcedAddrs are the Service's ingress addresses this node announces,
// unmapped and without repeats.
// They are appended to out.
func announcedAddrs(out []netip.Addr, svc *corev1.Service, announced map[netip.Addr]bool) []netip.Addr {
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		a, err := netip.ParseAddr(ing.IP)
		if err != nil {
			continue
		}
		a = a.Unmap()
		if announced[a] && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func schedulerOf(svc *corev1.Service) (string, error) {
	raw, ok := svc.Annotations[SchedulerAnnotation]
	if !ok {
		return DefaultScheduler, nil
	}
	s := strings.ToLower(strings.TrimSpace(raw))
	if s == "" {
		return DefaultScheduler, nil
	}
	if !schedulers[s] {
		return DefaultScheduler, fmt.Errorf("annotation %s=%q: %w (want one of %s); using %s",
			SchedulerAnnotation, raw, ErrUnknownScheduler, schedulerList, DefaultScheduler)
	}
	return s, nil
}

const schedulerList = "rr, wrr, lc, wlc, sh, dh, sed, nq, mh"

func affinityOf(svc *corev1.Service) (time.Duration, error) {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0, nil
	}
	cfg := svc.Spec.SessionAffinityConfig
	if cfg == nil || cfg.ClientIP == nil || cfg.ClientIP.TimeoutSeconds == nil {
		return DefaultAffinity, nil
	}
	secs := time.Duration(*cfg.ClientIP.TimeoutSeconds) * time.Second
	// The API server admits 1..86400 s; anything else came around it.
	if secs < time.Second || secs > maxAffinity {
		return DefaultAffinity, fmt.Errorf("sessionAffinityConfig.clientIP.timeoutSeconds %d: %w (want 1..%d); using %d",
			*cfg.ClientIP.TimeoutSeconds, ErrInvalidAffinity, int(maxAffinity/time.Second), int(DefaultAffinity/time.Second))
	}
	return secs, nil
}

// protocolOf maps a Service port's protocol; unset means TCP, as the API
// server defaults it.
func protocolOf(p corev1.Protocol) (Protocol, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return TCP, true
	case corev1.ProtocolUDP:
		return UDP, true
	}
	return "", false
}

// endpointState orders what an endpoint can be used for; for an endpoint in
// several slices the best state wins, so slice order does not matter.
type endpointState int

const (
	unusable endpointState = iota
	terminating
	ready
)

func stateOf(c discoveryv1.EndpointConditions) endpointState {
	isReady := c.Ready == nil || *c.Ready
	if isReady {
		return ready
	}
	serving := c.Serving == nil || *c.Serving
	if serving && c.Terminating != nil && *c.Terminating {
		return terminating
	}
	return unusable
}

// endpointAt is an endpoint address at the port of its slice.
type endpointAt struct {
	ap    netip.AddrPort
	state endpointState
}

// backendsFor lists the backends of one service port in one address family,
// sorted by address and port.
func (e *expansion) backendsFor(eps []*discoveryv1.EndpointSlice, portName string, proto Protocol, is4, local bool) []Backend {
	found := e.endpoints[:0]
	anyReady := false
	for _, s := range eps {
		port, ok := slicePort(s, portName, proto)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			if local && (ep.NodeName == nil || *ep.NodeName != e.node) {
				continue
			}
			st := stateOf(ep.Conditions)
			if st == unusable || len(ep.Addresses) == 0 {
				continue
			}
			// The addresses of an endpoint are fungible; the first one
			// is the one to use.
			a, err := netip.ParseAddr(ep.Addresses[0])
			if err != nil {
				continue
			}
			a = a.Unmap()
			if a.Is4() != is4 {
				continue
			}
			found = append(found, endpointAt{netip.AddrPortFrom(a, port), st})
			anyReady = anyReady || st == ready
		}
	}
	e.endpoints = found
	// Best state first, so the first of each address and port is the one
	// that counts.
	slices.SortFunc(found, func(a, b endpointAt) int {
		return cmp.Or(a.ap.Compare(b.ap), cmp.Compare(b.state, a.state))
	})
	out := make([]Backend, 0, len(found))
	for i, f := range found {
		if i > 0 && found[i-1].ap == f.ap {
			continue
		}
		w := DefaultWeight
		if f.state == terminating && anyReady {
			w = 0
		}
		out = append(out, Backend{Addr: f.ap.Addr(), Port: f.ap.Port(), Weight: w})
	}
	return out
}

// slicePort is the target port of the slice's port matching a service port
// by name and protocol, as the EndpointSlice controller resolves it.
func slicePort(s *discoveryv1.EndpointSlice, name string, proto Protocol) (uint16, bool) {
	for _, p := range s.Ports {
		pname := ""
		if p.Name != nil {
			pname = *p.Name
		}
		pproto := TCP
		if p.Protocol != nil {
			pp, ok := protocolOf(*p.Protocol)
			if !ok {
				continue
			}
			pproto = pp
		}
		if pname != name || pproto != proto || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

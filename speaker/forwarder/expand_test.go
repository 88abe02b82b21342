package forwarder

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const exNode = "node-a"

var (
	exVIP4 = netip.MustParseAddr("172.25.254.50")
	exVIP6 = netip.MustParseAddr("fd00:254::50")
	// exOther is an ingress address some other node announces.
	exOther = netip.MustParseAddr("172.25.254.51")

	exAnnounced = map[netip.Addr]bool{exVIP4: true, exVIP6: true}

	exCmp = cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmpopts.EquateEmpty(),
		cmpopts.EquateErrors(),
	}
)

// exService is a LoadBalancer Service in namespace "default" published at
// ingress.
func exService(name string, ingress []netip.Addr, ports []corev1.ServicePort, opts ...func(*corev1.Service)) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: ports},
	}
	for _, a := range ingress {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: a.String()})
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func exServicePort(name string, port int32, proto corev1.Protocol, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: proto, TargetPort: target}
}

func withLocal(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func withAnnotation(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations = map[string]string{k: v} }
}

func withAffinity(timeout *int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

func withCreated(minute int) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.CreationTimestamp = metav1.NewTime(time.Date(2026, 11, 22, 10, minute, 0, 0, time.UTC))
	}
}

func exSlicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	ep := discoveryv1.EndpointPort{Port: &port, Protocol: &proto}
	if name != "" {
		ep.Name = &name
	}
	return ep
}

// exSlice is an EndpointSlice of the Service "default/<service>".
func exSlice(service string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
	return discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default",
			Name:      fmt.Sprintf("%s-%s-%d", service, strings.ToLower(string(at)), len(eps)),
			Labels:    map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// Endpoint states as the EndpointSlice controller writes them.
const (
	stReady        = "ready"
	stUnset        = "unset" // no conditions at all: ready
	stNotReady     = "not-ready"
	stTerminating  = "terminating"      // serving while terminating
	stGone         = "terminating-dead" // terminating and no longer serving
	stOnlyNotReady = "only-not-ready"   // hand-written: just ready: false
)

func exEndpoint(addr, node, state string) discoveryv1.Endpoint {
	t, f := true, false
	ep := discoveryv1.Endpoint{Addresses: []string{addr}}
	if node != "" {
		ep.NodeName = &node
	}
	switch state {
	case stReady:
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &t, Serving: &t, Terminating: &f}
	case stNotReady:
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &f}
	case stTerminating:
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &t, Terminating: &t}
	case stGone:
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &f, Serving: &f, Terminating: &t}
	case stOnlyNotReady:
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &f}
	}
	return ep
}

func exBackend(addr string, port uint16, weight int) Backend {
	return Backend{Addr: netip.MustParseAddr(addr), Port: port, Weight: weight}
}

func exVS(addr netip.Addr, port uint16, p Protocol, masq bool, backends ...Backend) VirtualService {
	return VirtualService{Key: Key{Addr: addr, Port: port, Protocol: p}, Scheduler: RoundRobin, Masquerade: masq, Backends: backends}
}

func withScheduler(vs VirtualService, s string) VirtualService { vs.Scheduler = s; return vs }

func withAffinityOf(vs VirtualService, d time.Duration) VirtualService { vs.Affinity = d; return vs }

// exProblem is a Problem that is not itself an error, so that cmp compares
// its Err with errors.Is against a sentinel.
type exProblem struct {
	Service string
	Err     error
}

func exProblems(ps []Problem) []exProblem {
	var out []exProblem
	for _, p := range ps {
		out = append(out, exProblem(p))
	}
	return out
}

func problemTexts(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Error())
	}
	return out
}

func ptr[T any](v T) *T { return &v }

var (
	v4only = []netip.Addr{exVIP4}
	http80 = []corev1.ServicePort{exServicePort("http", 80, corev1.ProtocolTCP, intstr.FromString("web"))}
	web    = []discoveryv1.EndpointPort{exSlicePort("http", 8080, corev1.ProtocolTCP)}
	https  = []corev1.ServicePort{exServicePort("https", 443, corev1.ProtocolTCP, intstr.FromInt32(8443))}
)

func TestExpand(t *testing.T) {
	tests := []struct {
		name      string
		announced map[netip.Addr]bool // exAnnounced when nil
		services  []corev1.Service
		slices    []discoveryv1.EndpointSlice
		want      []VirtualService
		problems  []exProblem
	}{
		{
			name:     "cluster policy spreads over every ready endpoint and masquerades",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady),
				exEndpoint("10.244.2.5", "node-b", stReady),
				exEndpoint("10.244.3.5", "node-c", stUnset))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true,
				exBackend("10.244.1.5", 8080, DefaultWeight),
				exBackend("10.244.2.5", 8080, DefaultWeight),
				exBackend("10.244.3.5", 8080, DefaultWeight))},
		},
		{
			name:     "not-ready and dead terminating endpoints get no traffic",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady),
				exEndpoint("10.244.1.6", "node-a", stNotReady),
				exEndpoint("10.244.1.7", "node-a", stGone),
				exEndpoint("10.244.1.8", "node-a", stOnlyNotReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name:     "terminating endpoints drain while a ready one exists",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady),
				exEndpoint("10.244.2.5", "node-b", stTerminating))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true,
				exBackend("10.244.1.5", 8080, DefaultWeight),
				exBackend("10.244.2.5", 8080, 0))},
		},
		{
			name:     "terminating endpoints serve when none is ready",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.6", "node-a", stNotReady),
				exEndpoint("10.244.2.5", "node-b", stTerminating),
				exEndpoint("10.244.3.5", "node-c", stTerminating))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true,
				exBackend("10.244.2.5", 8080, DefaultWeight),
				exBackend("10.244.3.5", 8080, DefaultWeight))},
		},
		{
			name:     "local policy keeps this node's endpoints and the client's address",
			services: []corev1.Service{exService("web", v4only, http80, withLocal)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady),
				exEndpoint("10.244.1.6", "node-a", stReady),
				exEndpoint("10.244.2.5", "node-b", stReady),
				exEndpoint("10.244.9.9", "", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, false,
				exBackend("10.244.1.5", 8080, DefaultWeight),
				exBackend("10.244.1.6", 8080, DefaultWeight))},
		},
		{
			name:     "local policy falls back to local terminating endpoints even if remote ones are ready",
			services: []corev1.Service{exService("web", v4only, http80, withLocal)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stTerminating),
				exEndpoint("10.244.2.5", "node-b", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, false, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name:     "an announced address without endpoints is still carried, empty",
			services: []corev1.Service{exService("web", v4only, http80, withLocal)},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.2.5", "node-b", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, false)},
		},
		{
			name: "only the addresses this node announces",
			services: []corev1.Service{
				exService("web", []netip.Addr{exOther, exVIP4}, http80),
				exService("elsewhere", []netip.Addr{exOther}, []corev1.ServicePort{exServicePort("", 81, corev1.ProtocolSCTP, intstr.FromInt32(81))}),
			},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name:      "an IPv4-mapped ingress address is the IPv4 address",
			announced: map[netip.Addr]bool{exVIP4: true},
			services: []corev1.Service{{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
				Spec:       corev1.ServiceSpec{Ports: http80},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
					{IP: "::ffff:172.25.254.50"}, {Hostname: "lb.example"},
				}}},
			}},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
				exEndpoint("10.244.1.5", "node-a", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name:     "dual stack: each address gets the endpoints of its family",
			services: []corev1.Service{exService("web", []netip.Addr{exVIP6, exVIP4}, http80)},
			slices: []discoveryv1.EndpointSlice{
				exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.5", "node-a", stReady)),
				exSlice("web", discoveryv1.AddressTypeIPv6, web, exEndpoint("fd00:244:1::5", "node-a", stReady)),
			},
			want: []VirtualService{
				exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight)),
				exVS(exVIP6, 80, TCP, true, exBackend("fd00:244:1::5", 8080, DefaultWeight)),
			},
		},
		{
			name: "named target port resolves per slice, by name and protocol",
			services: []corev1.Service{exService("web", v4only, []corev1.ServicePort{
				exServicePort("http", 80, corev1.ProtocolTCP, intstr.FromString("web")),
				exServicePort("admin", 9000, corev1.ProtocolTCP, intstr.FromString("admin")),
			})},
			slices: []discoveryv1.EndpointSlice{
				// Two pod generations expose the named port "web" on
				// different numbers.
				exSlice("web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
					exSlicePort("admin", 9090, corev1.ProtocolTCP),
					exSlicePort("http", 8080, corev1.ProtocolTCP),
				}, exEndpoint("10.244.1.5", "node-a", stReady)),
				exSlice("web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
					exSlicePort("http", 8081, corev1.ProtocolTCP),
					exSlicePort("admin", 9090, corev1.ProtocolUDP),
				}, exEndpoint("10.244.2.5", "node-b", stReady), exEndpoint("10.244.2.6", "node-b", stReady)),
			},
			want: []VirtualService{
				exVS(exVIP4, 80, TCP, true,
					exBackend("10.244.1.5", 8080, DefaultWeight),
					exBackend("10.244.2.5", 8081, DefaultWeight),
					exBackend("10.244.2.6", 8081, DefaultWeight)),
				exVS(exVIP4, 9000, TCP, true, exBackend("10.244.1.5", 9090, DefaultWeight)),
			},
		},
		{
			name:     "a single unnamed port matches the slice's unnamed port",
			services: []corev1.Service{exService("web", v4only, []corev1.ServicePort{exServicePort("", 80, "", intstr.FromInt32(8080))})},
			slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{exSlicePort("", 8080, corev1.ProtocolTCP)},
				exEndpoint("10.244.1.5", "node-a", stReady))},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name: "TCP and UDP on one port number are two virtual services",
			services: []corev1.Service{exService("dns", v4only, []corev1.ServicePort{
				exServicePort("dns", 53, corev1.ProtocolUDP, intstr.FromInt32(5353)),
				exServicePort("dns-tcp", 53, corev1.ProtocolTCP, intstr.FromInt32(5353)),
			})},
			slices: []discoveryv1.EndpointSlice{exSlice("dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
				exSlicePort("dns", 5353, corev1.ProtocolUDP),
				exSlicePort("dns-tcp", 5353, corev1.ProtocolTCP),
			}, exEndpoint("10.244.1.53", "node-a", stReady))},
			want: []VirtualService{
				exVS(exVIP4, 53, TCP, true, exBackend("10.244.1.53", 5353, DefaultWeight)),
				exVS(exVIP4, 53, UDP, true, exBackend("10.244.1.53", 5353, DefaultWeight)),
			},
		},
		{
			name: "a slice port of another protocol does not match",
			services: []corev1.Service{exService("dns", v4only, []corev1.ServicePort{
				exServicePort("dns", 53, corev1.ProtocolUDP, intstr.FromInt32(53)),
			})},
			slices: []discoveryv1.EndpointSlice{exSlice("dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
				exSlicePort("dns", 53, corev1.ProtocolTCP),
			}, exEndpoint("10.244.1.53", "node-a", stReady))},
			want: []VirtualService{exVS(exVIP4, 53, UDP, true)},
		},
		{
			name: "SCTP is reported and skipped, the other ports carried",
			services: []corev1.Service{exService("sig", v4only, []corev1.ServicePort{
				exServicePort("sctp", 3868, corev1.ProtocolSCTP, intstr.FromInt32(3868)),
				exServicePort("tcp", 3868, corev1.ProtocolTCP, intstr.FromInt32(3868)),
			})},
			slices: []discoveryv1.EndpointSlice{exSlice("sig", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{
				exSlicePort("sctp", 3868, corev1.ProtocolSCTP),
				exSlicePort("tcp", 3868, corev1.ProtocolTCP),
			}, exEndpoint("10.244.1.8", "node-a", stReady))},
			want:     []VirtualService{exVS(exVIP4, 3868, TCP, true, exBackend("10.244.1.8", 3868, DefaultWeight))},
			problems: []exProblem{{Service: "default/sig", Err: ErrUnsupportedProtocol}},
		},
		{
			name:     "an endpoint in several slices counts once, in its best state",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: []discoveryv1.EndpointSlice{
				exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.5", "node-a", stNotReady)),
				exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.5", "node-a", stReady), exEndpoint("10.244.2.5", "node-b", stTerminating)),
				exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.5", "node-a", stTerminating), exEndpoint("10.244.2.5", "node-b", stReady), exEndpoint("10.244.3.5", "node-c", stReady)),
			},
			want: []VirtualService{exVS(exVIP4, 80, TCP, true,
				exBackend("10.244.1.5", 8080, DefaultWeight),
				exBackend("10.244.2.5", 8080, DefaultWeight),
				exBackend("10.244.3.5", 8080, DefaultWeight))},
		},
		{
			name:     "slices of other services, namespaces and FQDN slices are ignored",
			services: []corev1.Service{exService("web", v4only, http80)},
			slices: func() []discoveryv1.EndpointSlice {
				mine := exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.5", "node-a", stReady))
				other := exSlice("api", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.6", "node-a", stReady))
				elsewhere := exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.7", "node-a", stReady))
				elsewhere.Namespace = "prod"
				unlabelled := exSlice("web", discoveryv1.AddressTypeIPv4, web, exEndpoint("10.244.1.8", "node-a", stReady))
				unlabelled.Labels = nil
				fqdn := exSlice("web", discoveryv1.AddressTypeFQDN, web, exEndpoint("db.example", "node-a", stReady))
				return []discoveryv1.EndpointSlice{mine, other, elsewhere, unlabelled, fqdn}
			}(),
			want: []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.5", 8080, DefaultWeight))},
		},
		{
			name: "scheduler from the annotation",
			services: []corev1.Service{
				exService("a", []netip.Addr{exVIP4}, http80, withAnnotation(SchedulerAnnotation, "wlc")),
				exService("b", []netip.Addr{exVIP6}, http80, withAnnotation(SchedulerAnnotation, " MH ")),
			},
			want: []VirtualService{
				withScheduler(exVS(exVIP4, 80, TCP, true), WeightedLeastConnection),
				withScheduler(exVS(exVIP6, 80, TCP, true), MaglevHashing),
			},
		},
		{
			name:     "an unknown scheduler is reported and rr used",
			services: []corev1.Service{exService("web", v4only, http80, withAnnotation(SchedulerAnnotation, "fastest"))},
			want:     []VirtualService{exVS(exVIP4, 80, TCP, true)},
			problems: []exProblem{{Service: "default/web", Err: ErrUnknownScheduler}},
		},
		{
			name: "client IP affinity with its timeout, default three hours",
			services: []corev1.Service{
				exService("a", []netip.Addr{exVIP4}, http80, withAffinity(ptr[int32](600))),
				exService("b", []netip.Addr{exVIP6}, http80, withAffinity(nil)),
			},
			want: []VirtualService{
				withAffinityOf(exVS(exVIP4, 80, TCP, true), 10*time.Minute),
				withAffinityOf(exVS(exVIP6, 80, TCP, true), 3*time.Hour),
			},
		},
		{
			name:     "an out-of-range affinity timeout is reported and the default used",
			services: []corev1.Service{exService("web", v4only, http80, withAffinity(ptr[int32](0)))},
			want:     []VirtualService{withAffinityOf(exVS(exVIP4, 80, TCP, true), DefaultAffinity)},
			problems: []exProblem{{Service: "default/web", Err: ErrInvalidAffinity}},
		},
		{
			name:     "sessionAffinity None has no persistence even with a config",
			services: []corev1.Service{exService("web", v4only, http80, withAffinity(ptr[int32](600)), func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityNone })},
			want:     []VirtualService{exVS(exVIP4, 80, TCP, true)},
		},
		{
			name: "services sharing an address on different ports",
			services: []corev1.Service{
				exService("web", v4only, http80),
				exService("dns", v4only, []corev1.ServicePort{exServicePort("dns", 53, corev1.ProtocolUDP, intstr.FromInt32(53))}),
			},
			// Prepare's order: address, protocol, port.
			want: []VirtualService{exVS(exVIP4, 80, TCP, true), exVS(exVIP4, 53, UDP, true)},
		},
		{
			name: "the older service keeps a contested address and port",
			services: []corev1.Service{
				exService("newer", v4only, http80, withCreated(5), withLocal),
				exService("older", v4only, http80, withCreated(1)),
			},
			want:     []VirtualService{exVS(exVIP4, 80, TCP, true)},
			problems: []exProblem{{Service: "default/newer", Err: ErrDuplicateService}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			announced := tc.announced
			if announced == nil {
				announced = exAnnounced
			}
			got, problems := Expand(ExpandInput{Node: exNode, Services: tc.services, Slices: tc.slices, Announced: announced})
			if diff := cmp.Diff(tc.want, got, exCmp); diff != "" {
				t.Errorf("Expand() services mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.problems, exProblems(problems), exCmp); diff != "" {
				t.Errorf("Expand() problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The messages end up in Events on the Service: they must say what to fix.
func TestExpandProblemMessages(t *testing.T) {
	services := []corev1.Service{
		exService("web", v4only, http80, withAnnotation(SchedulerAnnotation, "fastest")),
		exService("sig", []netip.Addr{exVIP6}, []corev1.ServicePort{exServicePort("diameter", 3868, corev1.ProtocolSCTP, intstr.FromInt32(3868))}),
		exService("aff", []netip.Addr{exVIP6}, http80, withAffinity(ptr[int32](90000))),
		exService("newer", v4only, https, withCreated(5)),
		exService("older", v4only, https, withCreated(1)),
	}
	_, problems := Expand(ExpandInput{Node: exNode, Services: services, Announced: exAnnounced})
	got := problemTexts(problems)
	want := []string{
		`service default/aff: sessionAffinityConfig.clientIP.timeoutSeconds 90000: invalid session affinity timeout (want 1..86400); using 10800`,
		`service default/newer: duplicate virtual service 172.25.254.50:443/TCP: already carried for service default/older`,
		`service default/sig: port "diameter" (3868/SCTP): unsupported protocol`,
		`service default/web: annotation ironlb.io/scheduler="fastest": unknown scheduler (want one of rr, wrr, lc, wlc, sh, dh, sed, nq, mh); using rr`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Expand() problem messages mismatch (-want +got):\n%s", diff)
	}
	if !errors.Is(problems[3], ErrUnknownScheduler) {
		t.Errorf("errors.Is(%v, ErrUnknownScheduler) = false, want true", problems[3])
	}
}

// The user's manifests from the examples, as they apply them, with the
// status the controller adds.
const (
	example04 = `
apiVersion: v1
kind: Service
metadata:
  name: mysql
spec:
  type: LoadBalancer
  ports:
  - name: mysql
    port: 3306
    targetPort: 3306
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: mysql-1
  labels:
    kubernetes.io/service-name: mysql
addressType: IPv4
ports:
- name: mysql
  port: 3306
  protocol: TCP
endpoints:
- addresses:
  - 192.168.128.11
  conditions:
    ready: true
`
	example05 = `
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 10800
  ports:
  - name: tcp-80
    port: 80
    protocol: TCP
    targetPort: 80
    appProtocol: http
  selector:
    run: my-nginx
---
# What the EndpointSlice controller writes for two nginx pods.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: my-nginx-x7k2p
  labels:
    kubernetes.io/service-name: my-nginx
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
addressType: IPv4
ports:
- name: tcp-80
  port: 80
  protocol: TCP
  appProtocol: http
endpoints:
- addresses: ["10.244.1.7"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-a
- addresses: ["10.244.2.7"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-b
`
)

// decodeExample splits a manifest into its Service and EndpointSlices, in
// namespace "default" as kubectl applies them, and publishes the Service at
// ingress.
func decodeExample(t *testing.T, manifest string, ingress netip.Addr) ([]corev1.Service, []discoveryv1.EndpointSlice) {
	t.Helper()
	var services []corev1.Service
	var eps []discoveryv1.EndpointSlice
	for _, doc := range strings.Split(manifest, "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("decode example: %v", err)
		}
		switch meta.Kind {
		case "Service":
			var s corev1.Service
			if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
				t.Fatalf("decode example Service: %v", err)
			}
			s.Namespace = "default"
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ingress.String()}}
			services = append(services, s)
		case "EndpointSlice":
			var s discoveryv1.EndpointSlice
			if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
				t.Fatalf("decode example EndpointSlice: %v", err)
			}
			s.Namespace = "default"
			eps = append(eps, s)
		default:
			t.Fatalf("decode example: unexpected kind %q", meta.Kind)
		}
	}
	return services, eps
}

func TestExpandExamples(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		want     []VirtualService
	}{
		{
			name:     "04 selector-less service with a hand-written EndpointSlice",
			manifest: example04,
			want:     []VirtualService{exVS(exVIP4, 3306, TCP, true, exBackend("192.168.128.11", 3306, DefaultWeight))},
		},
		{
			name:     "05 session affinity",
			manifest: example05,
			want: []VirtualService{withAffinityOf(exVS(exVIP4, 80, TCP, true,
				exBackend("10.244.1.7", 80, DefaultWeight),
				exBackend("10.244.2.7", 80, DefaultWeight)), 3*time.Hour)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			services, eps := decodeExample(t, tc.manifest, exVIP4)
			got, problems := Expand(ExpandInput{Node: exNode, Services: services, Slices: eps, Announced: exAnnounced})
			if diff := cmp.Diff(tc.want, got, exCmp); diff != "" {
				t.Errorf("Expand() mismatch (-want +got):\n%s", diff)
			}
			if len(problems) > 0 {
				t.Errorf("Expand() problems = %v, want none", problems)
			}
		})
	}
}

// mixedInput exercises every rule at once, for the properties below.
func mixedInput() ExpandInput {
	in := ExpandInput{Node: exNode, Announced: exAnnounced}
	in.Services = []corev1.Service{
		exService("web", []netip.Addr{exVIP4, exVIP6}, http80, withAffinity(nil), withCreated(3)),
		exService("dns", v4only, []corev1.ServicePort{
			exServicePort("dns", 53, corev1.ProtocolUDP, intstr.FromInt32(53)),
			exServicePort("sctp", 54, corev1.ProtocolSCTP, intstr.FromInt32(54)),
		}, withLocal, withAnnotation(SchedulerAnnotation, "nope"), withCreated(3)),
		exService("clash", v4only, http80, withCreated(3)),
	}
	in.Slices = []discoveryv1.EndpointSlice{
		exSlice("web", discoveryv1.AddressTypeIPv4, web,
			exEndpoint("10.244.1.5", "node-a", stReady), exEndpoint("10.244.2.5", "node-b", stTerminating), exEndpoint("10.244.3.5", "node-c", stReady)),
		exSlice("web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{exSlicePort("http", 8081, corev1.ProtocolTCP)},
			exEndpoint("10.244.1.9", "node-a", stReady), exEndpoint("10.244.1.5", "node-a", stNotReady)),
		exSlice("web", discoveryv1.AddressTypeIPv6, web, exEndpoint("fd00:244:1::5", "node-a", stReady)),
		exSlice("dns", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{exSlicePort("dns", 53, corev1.ProtocolUDP)},
			exEndpoint("10.244.1.53", "node-a", stReady), exEndpoint("10.244.2.53", "node-b", stReady)),
	}
	return in
}

// Informers list objects in no particular order; the table must not care.
func TestExpandIgnoresInputOrder(t *testing.T) {
	in := mixedInput()
	want, wantProblems := Expand(in)
	if len(want) == 0 || len(wantProblems) == 0 {
		t.Fatalf("Expand(mixedInput()) = %d services, %d problems; want some of each", len(want), len(wantProblems))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		shuffled := ExpandInput{Node: in.Node, Announced: in.Announced}
		shuffled.Services = append([]corev1.Service(nil), in.Services...)
		shuffled.Slices = make([]discoveryv1.EndpointSlice, len(in.Slices))
		for j, s := range in.Slices {
			s.Endpoints = append([]discoveryv1.Endpoint(nil), s.Endpoints...)
			r.Shuffle(len(s.Endpoints), func(a, b int) { s.Endpoints[a], s.Endpoints[b] = s.Endpoints[b], s.Endpoints[a] })
			shuffled.Slices[j] = s
		}
		r.Shuffle(len(shuffled.Services), func(a, b int) {
			shuffled.Services[a], shuffled.Services[b] = shuffled.Services[b], shuffled.Services[a]
		})
		r.Shuffle(len(shuffled.Slices), func(a, b int) {
			shuffled.Slices[a], shuffled.Slices[b] = shuffled.Slices[b], shuffled.Slices[a]
		})
		got, problems := Expand(shuffled)
		if diff := cmp.Diff(want, got, exCmp); diff != "" {
			t.Fatalf("shuffle %d: Expand() services mismatch (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(problemTexts(wantProblems), problemTexts(problems)); diff != "" {
			t.Fatalf("shuffle %d: Expand() problems mismatch (-want +got):\n%s", i, diff)
		}
	}
}

// However many Services contest a key, and in whatever order they come, the
// oldest keeps it and every other one hears about it.
func TestExpandOldestKeepsContestedKey(t *testing.T) {
	const contenders = 40
	var services []corev1.Service
	for i := range contenders {
		// Minute i+1 for contender i; each gets its own backend so the
		// winner shows in the table, and an uncontested port of its own so
		// that the contested entries are not simply adjacent.
		ports := []corev1.ServicePort{http80[0], exServicePort("own", int32(1000+i), corev1.ProtocolTCP, intstr.FromInt32(9000))}
		services = append(services, exService(fmt.Sprintf("c%02d", i), v4only, ports, withCreated(i+1)))
	}
	var eps []discoveryv1.EndpointSlice
	for i := range contenders {
		eps = append(eps, exSlice(fmt.Sprintf("c%02d", i), discoveryv1.AddressTypeIPv4, web,
			exEndpoint(fmt.Sprintf("10.244.1.%d", i+1), "node-a", stReady)))
	}
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(len(services), func(a, b int) { services[a], services[b] = services[b], services[a] })

	got, problems := Expand(ExpandInput{Node: exNode, Services: services, Slices: eps, Announced: exAnnounced})
	want := []VirtualService{exVS(exVIP4, 80, TCP, true, exBackend("10.244.1.1", 8080, DefaultWeight))}
	for i := range contenders {
		want = append(want, exVS(exVIP4, uint16(1000+i), TCP, true))
	}
	if diff := cmp.Diff(want, got, exCmp); diff != "" {
		t.Errorf("Expand() services mismatch (-want +got):\n%s", diff)
	}
	var wantProblems []exProblem
	for i := 1; i < contenders; i++ {
		wantProblems = append(wantProblems, exProblem{Service: fmt.Sprintf("default/c%02d", i), Err: ErrDuplicateService})
	}
	if diff := cmp.Diff(wantProblems, exProblems(problems), exCmp); diff != "" {
		t.Errorf("Expand() problems mismatch (-want +got):\n%s", diff)
	}
}

// The table goes straight to a backend's Sync: it must already be in the
// canonical form Prepare produces, and valid.
func TestExpandIsPrepared(t *testing.T) {
	got, _ := Expand(mixedInput())
	prepared, err := Prepare(got)
	if err != nil {
		t.Fatalf("Prepare(Expand()) error = %v, want nil", err)
	}
	if diff := cmp.Diff(prepared, got, exCmp); diff != "" {
		t.Errorf("Expand() is not in Prepare's form (-prepared +got):\n%s", diff)
	}
}

// Changing one virtual service must not change the others: each gets its
// own backend slice, even when addresses of one Service share endpoints.
func TestExpandBackendsAreNotShared(t *testing.T) {
	in := ExpandInput{
		Node:      exNode,
		Announced: map[netip.Addr]bool{exVIP4: true, exOther: true},
		Services:  []corev1.Service{exService("web", []netip.Addr{exVIP4, exOther}, http80)},
		Slices: []discoveryv1.EndpointSlice{exSlice("web", discoveryv1.AddressTypeIPv4, web,
			exEndpoint("10.244.1.5", "node-a", stReady))},
	}
	got, _ := Expand(in)
	if len(got) != 2 {
		t.Fatalf("Expand() = %d services, want 2", len(got))
	}
	got[0].Backends[0].Weight = 7
	if w := got[1].Backends[0].Weight; w != DefaultWeight {
		t.Errorf("after changing the first service, the second's weight = %d, want %d", w, DefaultWeight)
	}
}

// BenchmarkExpand measures the speaker's per-change expansion at the design
// scale: 10,000 Services with one port, each with one slice of 10 endpoints.
func BenchmarkExpand(b *testing.B) {
	const services, endpoints = 10000, 10
	in := ExpandInput{Node: exNode, Announced: make(map[netip.Addr]bool, services)}
	base := netip.MustParseAddr("10.96.0.0").As4()
	for i := range services {
		vip := netip.AddrFrom4([4]byte{base[0], base[1] + byte(i>>16), byte(i >> 8), byte(i)})
		in.Announced[vip] = true
		name := fmt.Sprintf("svc-%05d", i)
		in.Services = append(in.Services, exService(name, []netip.Addr{vip}, http80))
		eps := make([]discoveryv1.Endpoint, endpoints)
		for j := range eps {
			eps[j] = exEndpoint(fmt.Sprintf("10.%d.%d.%d", 128+i/(256*25), (i/25)%256, (i%25)*10+j), fmt.Sprintf("node-%d", j), stReady)
		}
		in.Slices = append(in.Slices, exSlice(name, discoveryv1.AddressTypeIPv4, web, eps...))
	}
	got, problems := Expand(in)
	if len(got) != services || len(problems) != 0 || len(got[0].Backends) != endpoints {
		b.Fatalf("Expand() = %d services (%d backends in the first), %d problems; want %d, %d, 0",
			len(got), len(got[0].Backends), len(problems), services, endpoints)
	}
	b.ReportAllocs()
	for b.Loop() {
		Expand(in)
	}
}

package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	"github.com/ironlb/ironlb/speaker/forwarder"
)

type fakeTable struct{ got [][]forwarder.VirtualService }

func (f *fakeTable) Sync(_ context.Context, vs []forwarder.VirtualService) error {
	f.got = append(f.got, vs)
	return nil
}

func fwdService(name, ip string, scheduler string) corev1.Service {
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{forwarder.SchedulerAnnotation: scheduler}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}},
	}
}

func fwdSlice(service, addr string) discoveryv1.EndpointSlice {
	port, proto, name := int32(80), corev1.ProtocolTCP, ""
	return discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: service + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

// The forwarder carries only what this node announces, and a Service's
// problem becomes one Warning Event, not one per reconcile.
func TestForwardingSync(t *testing.T) {
	table := &fakeTable{}
	rec := events.NewFakeRecorder(10)
	f := &forwarding{table: table, node: "node1", recorder: rec, told: map[string]map[string]bool{}}
	in := Inputs{
		Node: "node1",
		Services: []corev1.Service{
			fwdService("mine", "172.25.254.50", "bogus"),
			fwdService("theirs", "172.25.254.51", ""),
		},
		Slices: []discoveryv1.EndpointSlice{fwdSlice("mine", "10.244.1.10"), fwdSlice("theirs", "10.244.2.10")},
	}
	announce := []Announcement{{Service: "default/mine", Addr: netip.MustParseAddr("172.25.254.50")}}
	for range 3 {
		if err := f.sync(context.Background(), in, announce); err != nil {
			t.Fatalf("sync: %v", err)
		}
	}

	want := []forwarder.VirtualService{{
		Key:        forwarder.Key{Addr: netip.MustParseAddr("172.25.254.50"), Port: 80, Protocol: forwarder.TCP},
		Scheduler:  forwarder.RoundRobin,
		Backends:   []forwarder.Backend{{Addr: netip.MustParseAddr("10.244.1.10"), Port: 80, Weight: forwarder.DefaultWeight}},
		Masquerade: true,
	}}
	if diff := cmp.Diff(want, table.got[len(table.got)-1], cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("forwarded table (-want +got):\n%s", diff)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 1 {
		t.Fatalf("events after 3 syncs = %q, want one %s warning", got, ReasonForwarderProblem)
	}
}

func TestForwardingOffDoesNothing(t *testing.T) {
	f, backend, err := newForwarding("", "node1", events.NewFakeRecorder(1), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if backend != forwarder.ModeOff || f.table != nil {
		t.Errorf("newForwarding(\"\") = backend %q, table %v; want off and no table", backend, f.table)
	}
	if err := f.sync(context.Background(), Inputs{}, []Announcement{{Service: "default/x", Addr: netip.MustParseAddr("172.25.254.50")}}); err != nil {
		t.Errorf("sync with the forwarder off: %v", err)
	}
}

// cleaningTable is a fakeTable that can also clean up.
type cleaningTable struct {
	fakeTable
	cleanups int
	err      error
}

func (c *cleaningTable) Cleanup(context.Context) error {
	c.cleanups++
	return c.err
}

// A stopping speaker takes the forwarding state back once, syncs nothing
// after that, and reports only real failures.
func TestForwardingStopCleansUp(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cleanupErr error
		wantErr    bool
	}{
		{name: "removed"},
		{name: "successor took over", cleanupErr: fmt.Errorf("table: %w", forwarder.ErrChangedSinceSync)},
		{name: "kernel refused", cleanupErr: errors.New("netlink: permission denied"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := &cleaningTable{err: tc.cleanupErr}
			f := &forwarding{table: table, node: "node1", recorder: events.NewFakeRecorder(10), told: map[string]map[string]bool{}, log: logr.Discard()}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Start(ctx) }()
			in := Inputs{Node: "node1", Services: []corev1.Service{fwdService("mine", "172.25.254.50", "")}, Slices: []discoveryv1.EndpointSlice{fwdSlice("mine", "10.244.1.10")}}
			announce := []Announcement{{Service: "default/mine", Addr: netip.MustParseAddr("172.25.254.50")}}
			if err := f.sync(ctx, in, announce); err != nil {
				t.Fatalf("sync: %v", err)
			}
			cancel()
			if err := <-done; (err != nil) != tc.wantErr {
				t.Errorf("Start() = %v, want error: %v", err, tc.wantErr)
			}
			if err := f.sync(context.Background(), in, announce); err != nil {
				t.Errorf("sync after stop: %v", err)
			}
			if got := []int{len(table.got), table.cleanups}; !cmp.Equal(got, []int{1, 1}) {
				t.Errorf("syncs, cleanups = %v, want one sync before the stop and one cleanup", got)
			}
		})
	}
}

// flakyTable fails its syncs while err is set.
type flakyTable struct {
	fakeTable
	err error
}

func (f *flakyTable) Sync(ctx context.Context, vs []forwarder.VirtualService) error {
	if f.err != nil {
		return f.err
	}
	return f.fakeTable.Sync(ctx, vs)
}

// An address whose forwarding failed is not announced (it would draw
// traffic here and drop it), the Service gets one Warning naming the
// failure, and addresses forwarded before stay announced.
func TestForwardingFailureWithholdsAnnouncement(t *testing.T) {
	table := &flakyTable{}
	rec := events.NewFakeRecorder(10)
	f := &forwarding{table: table, node: "node1", recorder: rec, told: map[string]map[string]bool{}, log: logr.Discard()}
	in := Inputs{
		Node:     "node1",
		Services: []corev1.Service{fwdService("old", "172.25.254.50", ""), fwdService("new", "172.25.254.51", "")},
		Slices:   []discoveryv1.EndpointSlice{fwdSlice("old", "10.244.1.10"), fwdSlice("new", "10.244.1.11")},
	}
	old := Announcement{Service: "default/old", Addr: netip.MustParseAddr("172.25.254.50")}
	added := Announcement{Service: "default/new", Addr: netip.MustParseAddr("172.25.254.51")}
	announceAfterSync := func(as ...Announcement) []Announcement {
		err := f.sync(context.Background(), in, as)
		if (err != nil) != (table.err != nil) {
			t.Fatalf("sync = %v, want the table's error %v", err, table.err)
		}
		return f.forwarded(in, as, err)
	}
	addrs := func(as []Announcement) []netip.Addr {
		var out []netip.Addr
		for _, a := range as {
			out = append(out, a.Addr)
		}
		return out
	}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

	if got := announceAfterSync(old); !cmp.Equal(addrs(got), []netip.Addr{old.Addr}, cmpAddr) {
		t.Fatalf("forwarding works: announced %v, want %v", addrs(got), old.Addr)
	}
	table.err = errors.New("set sysctl net.ipv4.vs.conntrack=1: read-only file system")
	for range 2 {
		if got := announceAfterSync(old, added); !cmp.Equal(addrs(got), []netip.Addr{old.Addr}, cmpAddr) {
			t.Errorf("forwarding of %s failed: announced %v, want only %v", added.Addr, addrs(got), old.Addr)
		}
	}
	table.err = nil
	if got := announceAfterSync(old, added); !cmp.Equal(addrs(got), []netip.Addr{old.Addr, added.Addr}, cmpAddr) {
		t.Errorf("forwarding repaired: announced %v, want both", addrs(got))
	}

	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 1 || !strings.Contains(got[0], ReasonNotForwarded) || !strings.Contains(got[0], "net.ipv4.vs.conntrack") {
		t.Errorf("events = %q, want one %s warning naming the failure", got, ReasonNotForwarded)
	}
}

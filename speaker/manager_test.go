package speaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// fakeAnnouncer keeps every set of announcements the speaker asked for.
type fakeAnnouncer struct {
	mu      sync.Mutex
	history [][]Announcement
}

func (f *fakeAnnouncer) Sync(_ context.Context, as []Announcement) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history = append(f.history, slices.Clone(as))
	return nil
}

// announced returns the last announcements and how many Syncs there were.
func (f *fakeAnnouncer) announced() ([]Announcement, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.history) == 0 {
		return nil, 0
	}
	return slices.Clone(f.history[len(f.history)-1]), len(f.history)
}

// firstSyncWith is the number (from 1) of the first Sync that announced
// addr, 0 if none did.
func (f *fakeAnnouncer) firstSyncWith(addr netip.Addr) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, as := range f.history {
		if slices.ContainsFunc(as, func(a Announcement) bool { return a.Addr == addr }) {
			return i + 1
		}
	}
	return 0
}

// fakeMembers is a memberlist view the test sets.
type fakeMembers struct {
	mu      sync.Mutex
	alive   []string
	changes chan struct{}
}

func newFakeMembers(alive ...string) *fakeMembers {
	return &fakeMembers{alive: alive, changes: make(chan struct{}, 1)}
}

func (f *fakeMembers) Alive() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.alive)
}

func (f *fakeMembers) Changes() <-chan struct{} { return f.changes }

func (f *fakeMembers) Join([]string) (int, error) { return 0, nil }

func (f *fakeMembers) set(alive ...string) {
	f.mu.Lock()
	f.alive = alive
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// speakerUnderTest is one in-process speaker manager.
type speakerUnderTest struct {
	node      string
	announcer *fakeAnnouncer
	members   *fakeMembers
	// confirmed is what wantAnnounced last saw announced.
	confirmed []Announcement
}

func startSpeaker(t *testing.T, env *controlplane.Env, node string, alive ...string) *speakerUnderTest {
	t.Helper()
	s := &speakerUnderTest{node: node, announcer: &fakeAnnouncer{}, members: newFakeMembers(alive...)}
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := NewManager(ctx, env.Config, Options{NodeName: node, MetricsAddr: "0", ProbeAddr: "0"}, Deps{Announcer: s.announcer, Members: s.members, SharedProcess: true})
	if err != nil {
		cancel()
		t.Fatalf("NewManager(%s): %v", node, err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("speaker %s: %v", node, err)
		}
	})
	return s
}

// eventually polls check until it returns "" or the deadline passes, then
// fails with the last complaint.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *speakerUnderTest) wantAnnounced(t *testing.T, want []Announcement) {
	t.Helper()
	eventually(t, s.node+" announces", func() string {
		got, syncs := s.announcer.announced()
		if syncs == 0 {
			return "no Sync yet"
		}
		return cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }))
	})
	s.confirmed = slices.Clone(want)
}

// wantWithdrawn waits until the speaker announces nothing. The last state
// the test confirmed must be a non-empty one: otherwise the check passes at
// its first poll and proves no withdrawal happened.
func (s *speakerUnderTest) wantWithdrawn(t *testing.T) {
	t.Helper()
	if len(s.confirmed) == 0 {
		t.Fatalf("%s: wantWithdrawn needs an announcement confirmed first, or it passes at once", s.node)
	}
	s.wantAnnounced(t, nil)
}

// l2status is what a user sees of a ServiceL2Status.
type l2status struct {
	Labels map[string]string
	Status v1beta1.ServiceL2StatusStatus
}

func statuses(t *testing.T, c client.Client) []l2status {
	t.Helper()
	var list v1beta1.ServiceL2StatusList
	listSystem(t, c, &list)
	var out []l2status
	for _, st := range list.Items {
		out = append(out, l2status{Labels: st.Labels, Status: st.Status})
	}
	return out
}

func wantStatus(node string, ifaces ...string) l2status {
	st := l2status{
		Labels: map[string]string{LabelNode: node, LabelServiceName: "web", LabelServiceNamespace: "default"},
		Status: v1beta1.ServiceL2StatusStatus{Node: node, ServiceName: "web", ServiceNamespace: "default"},
	}
	for _, i := range ifaces {
		st.Status.Interfaces = append(st.Status.Interfaces, v1beta1.InterfaceInfo{Name: i})
	}
	return st
}

// listSystem lists the objects of a kind in metallb-system.
func listSystem(t *testing.T, c client.Client, list client.ObjectList) {
	t.Helper()
	if err := c.List(context.Background(), list, client.InNamespace("metallb-system")); err != nil {
		t.Fatalf("list %T: %v", list, err)
	}
}

// setUpBGPNode creates the metallb-system namespace and node n1 at
// 127.0.0.1, and returns a port there where nothing listens: a peer on it
// is configured but its session never comes up.
func setUpBGPNode(t *testing.T, c client.Client) (closedPort uint16) {
	t.Helper()
	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}})
	n1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"kubernetes.io/hostname": "n1"}}}
	mustCreate(t, c, n1)
	n1.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if err := c.Status().Update(context.Background(), n1); err != nil {
		t.Fatalf("set node address: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// eventNotes are the notes of the Events in namespace with reason about
// the object named regarding, of type eventType unless it is empty, as
// `kubectl get events` shows them.
func eventNotes(ctx context.Context, c client.Client, namespace, eventType, reason, regarding string) ([]string, error) {
	var evs eventsv1.EventList
	if err := c.List(ctx, &evs, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	var notes []string
	for _, e := range evs.Items {
		if e.Reason == reason && e.Regarding.Name == regarding && (eventType == "" || e.Type == eventType) {
			notes = append(notes, e.Note)
		}
	}
	return notes, nil
}

func mustCreate(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// TestSpeakerAnnouncesAndWithdraws runs two speakers against a real API
// server, each with the same memberlist view: the election winner announces
// a Service once it has an address and a ready endpoint, reports it through
// ServiceL2Status and an Event, withdraws when the endpoints go, and the
// other node takes over when the winner leaves memberlist. Every withdrawal
// is checked after the announcement was seen, so it is a real change.
func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	env := controlplane.Start(t)
	c := env.Client
	ctx := context.Background()

	mustCreate(t, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}})
	for _, n := range []string{"n1", "n2"} {
		mustCreate(t, c, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"kubernetes.io/hostname": n}}})
	}
	mustCreate(t, c,
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "lab"},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []string{"172.25.254.50-172.25.254.59"}}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "l2"},
			Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []string{"lab"}, Interfaces: []string{"eth0"}}},
	)

	const addr = "172.25.254.50"
	owner, other := winner(addr, "n1", "n2"), ""
	if owner == "n1" {
		other = "n2"
	} else {
		other = "n1"
	}
	speakers := map[string]*speakerUnderTest{
		"n1": startSpeaker(t, env, "n1", "n1", "n2"),
		"n2": startSpeaker(t, env, "n2", "n1", "n2"),
	}
	speakers["n1"].wantAnnounced(t, nil)
	speakers["n2"].wantAnnounced(t, nil)

	// A LoadBalancer Service with its address, as the controller leaves it.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	mustCreate(t, c, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: addr}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatalf("set service status: %v", err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr("n1"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
	mustCreate(t, c, slice)
	want := []Announcement{{Service: "default/web", Addr: netip.MustParseAddr(addr), Interfaces: []string{"eth0"}}}
	speakers[owner].wantAnnounced(t, want)

	eventually(t, "ServiceL2Status of the owner", func() string {
		return cmp.Diff([]l2status{wantStatus(owner, "eth0")}, statuses(t, c))
	})
	eventually(t, "nodeAssigned event", func() string {
		notes, err := eventNotes(ctx, c, "default", "", ReasonNodeAssigned, "web")
		if err != nil {
			return err.Error()
		}
		return cmp.Diff([]string{`announcing from node "` + owner + `" with protocol "layer2"`}, notes)
	})

	// An address without a ready endpoint is not announced: nothing would
	// answer behind it. The owner was seen announcing it above, so this
	// waits for a real withdrawal.
	setReady := func(ready bool) {
		t.Helper()
		slice.Endpoints[0].Conditions.Ready = ptr(ready)
		if err := c.Update(ctx, slice); err != nil {
			t.Fatalf("set endpoint ready=%v: %v", ready, err)
		}
	}
	setReady(false)
	speakers[owner].wantWithdrawn(t)
	setReady(true)
	speakers[owner].wantAnnounced(t, want)

	// The owner's speaker dies: the other one takes over and reports it.
	// Until then the other, with both nodes alive, must never have
	// announced the address: its first Sync with it comes after the change.
	syncsBeforeTakeover := func() int { _, n := speakers[other].announcer.announced(); return n }()
	speakers[other].members.set(other)
	speakers[other].wantAnnounced(t, want)
	if first := speakers[other].announcer.firstSyncWith(netip.MustParseAddr(addr)); first <= syncsBeforeTakeover {
		t.Errorf("%s announced %s in Sync %d, while %s was alive and the owner (takeover came after Sync %d)",
			other, addr, first, owner, syncsBeforeTakeover)
	}
	eventually(t, "ServiceL2Status after takeover", func() string {
		got := statuses(t, c)
		if !slices.ContainsFunc(got, func(s l2status) bool { return cmp.Equal(s, wantStatus(other, "eth0")) }) {
			return fmt.Sprintf("no status for %s: %+v", other, got)
		}
		return ""
	})
	// The owner is back: the other withdraws.
	speakers[other].members.set("n1", "n2")
	speakers[other].wantWithdrawn(t)
	speakers[owner].wantAnnounced(t, want)

	// The endpoints go: the address is withdrawn and its status removed.
	setReady(false)
	speakers[owner].wantWithdrawn(t)
	eventually(t, "ServiceL2Status removed", func() string {
		return cmp.Diff([]l2status(nil), statuses(t, c), cmpopts.EquateEmpty())
	})
}

func TestNewManagerNeedsNodeName(t *testing.T) {
	_, err := NewManager(context.Background(), nil, Options{}, Deps{})
	if !errors.Is(err, ErrNoNodeName) {
		t.Fatalf("NewManager without a node name: error %v, want %v", err, ErrNoNodeName)
	}
}

package layer2

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
)

type testResponder struct {
	*Responder
	arp, ndp *fakeConn
	groups   *fakeGroups
	// noCarrier simulates the interface's link being down.
	noCarrier atomic.Bool
	stop      func()
}

func startResponder(t *testing.T, schedule []time.Duration) *testResponder {
	t.Helper()
	tr := &testResponder{arp: newFakeConn(), ndp: newFakeConn(), groups: &fakeGroups{}}
	ifi := net.Interface{Index: 7, Name: "eth0", MTU: 1500, HardwareAddr: ourMAC}
	r, err := NewResponder(ifi, Conns{ARP: tr.arp, NDP: tr.ndp, Groups: tr.groups, LinkLocal: ourLL}, ResponderConfig{
		Schedule: schedule,
		carrier:  func(net.Interface) bool { return !tr.noCarrier.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.Responder = r
	tr.stop = runInBackground(t, r.Start)
	return tr
}

// runInBackground runs start until the returned stop (or the test's end)
// cancels its context; stop fails the test unless start then returns nil,
// within a deadline.
func runInBackground(t *testing.T, start func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var startErr error
	go func() {
		startErr = start(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() {
		cancel()
		select {
		case <-done:
			if err := startErr; err != nil {
				t.Errorf("Start() = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Start() did not return after its context ended")
		}
	}
}

func TestResponderAnswersOnlyOwned(t *testing.T) {
	r := startResponder(t, []time.Duration{})
	if err := r.Set([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}

	r.arp.in <- arpFrame(t, arp.OperationRequest, clientMAC, clientIP, other4)
	r.arp.in <- arpFrame(t, arp.OperationRequest, clientMAC, clientIP, vip4)
	// The first request was ignored: the first frame out answers the second.
	if got := decodeARP(t, r.arp.next(t, "ARP reply")); got.SenderIP != vip4 || got.Op != arp.OperationReply {
		t.Errorf("first frame out = %+v, want a reply for %v", got, vip4)
	}

	r.ndp.in <- nsFrame(t, client6, solicitedNode(t, other6), other6, true, nil)
	r.ndp.in <- nsFrame(t, client6, vip6, vip6, false, nil)
	if got := decodeNA(t, r.ndp.next(t, "neighbor advertisement")); got.Target != vip6 || !got.Solicited {
		t.Errorf("first frame out = %+v, want a solicited advertisement for %v", got, vip6)
	}
	if diff := cmp.Diff([]netip.Addr{solicitedNode(t, vip6)}, r.groups.groups(), addrCmp); diff != "" {
		t.Errorf("joined groups mismatch (-want +got):\n%s", diff)
	}

	// Losing the addresses silences the responder at once.
	if err := r.Set([]netip.Addr{other4}); err != nil {
		t.Fatal(err)
	}
	if got := r.groups.groups(); len(got) != 0 {
		t.Errorf("joined groups after losing %v = %v, want none", vip6, got)
	}
	r.arp.in <- arpFrame(t, arp.OperationRequest, clientMAC, clientIP, vip4)
	r.arp.in <- arpFrame(t, arp.OperationRequest, clientMAC, clientIP, other4)
	if got := decodeARP(t, r.arp.next(t, "ARP reply")); got.SenderIP != other4 {
		t.Errorf("first frame out after losing %v answers %v, want %v", vip4, got.SenderIP, other4)
	}
	if got := r.Stats(); got.ARPAnswered != 2 || got.NDPAnswered != 1 {
		t.Errorf("Stats() = %+v, want 2 ARP and 1 NDP answers", got)
	}

	r.stop()
	if !r.arp.isClosed() || !r.ndp.isClosed() {
		t.Errorf("sockets still open after Start returned")
	}
}

func TestResponderAnnouncesGainedAddresses(t *testing.T) {
	schedule := []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond}
	r := startResponder(t, schedule)
	start := time.Now()
	if err := r.Set([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	// Each round: the request and reply forms of gratuitous ARP, one
	// unsolicited advertisement.
	var arpSeen []arpView
	for range 2 * len(schedule) {
		arpSeen = append(arpSeen, decodeARP(t, r.arp.next(t, "gratuitous ARP")))
	}
	var naSeen []naView
	for range len(schedule) {
		naSeen = append(naSeen, decodeNA(t, r.ndp.next(t, "unsolicited advertisement")))
	}
	elapsed := time.Since(start)
	for i, a := range arpSeen {
		if a.SenderIP != vip4 || a.TargetIP != vip4 || a.EthDst != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("ARP frame %d = %+v, want a broadcast announcement of %v", i, a, vip4)
		}
	}
	for i, n := range naSeen {
		if n.Target != vip6 || n.Dst != allNodes || !n.Override || n.Solicited {
			t.Errorf("advertisement %d = %+v, want unsolicited override of %v to all nodes", i, n, vip6)
		}
	}
	if elapsed < schedule[len(schedule)-1] {
		t.Errorf("all %d rounds sent within %v, before the last offset %v", len(schedule), elapsed, schedule[len(schedule)-1])
	}
	if got := r.Stats().Announcements; got != uint64(2*len(schedule)) {
		t.Errorf("Stats().Announcements = %d, want %d", got, 2*len(schedule))
	}

	// An address kept is not announced again; one gained is.
	if err := r.Set([]netip.Addr{vip4, vip6, other4}); err != nil {
		t.Fatal(err)
	}
	for range 2 * len(schedule) {
		if a := decodeARP(t, r.arp.next(t, "gratuitous ARP")); a.SenderIP != other4 {
			t.Errorf("announced %v, want only the newly gained %v", a.SenderIP, other4)
		}
	}
}

func TestResponderStopsAnnouncingLostAddress(t *testing.T) {
	r := startResponder(t, []time.Duration{0, time.Hour})
	if err := r.Set([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r.arp.next(t, "first gratuitous round")
	}
	if err := r.Set(nil); err != nil {
		t.Fatal(err)
	}
	r.Responder.mu.Lock()
	pending := len(r.Responder.pending)
	r.Responder.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d announcements still scheduled after losing every address", pending)
	}
}

func TestNewResponderRejectsNonEthernet(t *testing.T) {
	if _, err := NewResponder(net.Interface{Name: "tun0"}, Conns{}, ResponderConfig{}); err == nil {
		t.Error("NewResponder(tun0 without MAC) = nil error, want one")
	}
}

// noFrame fails if c writes a frame within wait.
func (c *fakeConn) noFrame(t *testing.T, wait time.Duration, why string) {
	t.Helper()
	select {
	case f := <-c.out:
		t.Errorf("%s: frame written: % x", why, f)
	case <-time.After(wait):
	}
}

func TestResponderReannounce(t *testing.T) {
	r := startResponder(t, []time.Duration{0})
	if err := r.Set([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r.arp.next(t, "gratuitous ARP on gaining the address")
	}
	r.ndp.next(t, "unsolicited advertisement on gaining the address")

	// Keeping the addresses sends nothing; a heal re-announces them all.
	if err := r.Set([]netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	r.arp.noFrame(t, 50*time.Millisecond, "addresses kept")
	r.Reannounce()
	for i := range 2 {
		if a := decodeARP(t, r.arp.next(t, "gratuitous ARP after Reannounce")); a.SenderIP != vip4 || a.TargetIP != vip4 {
			t.Errorf("ARP frame %d after Reannounce = %+v, want an announcement of %v", i, a, vip4)
		}
	}
	if n := decodeNA(t, r.ndp.next(t, "unsolicited advertisement after Reannounce")); n.Target != vip6 || !n.Override || n.Solicited {
		t.Errorf("advertisement after Reannounce = %+v, want an unsolicited override of %v", n, vip6)
	}
}

func TestResponderDropsAnnouncementsWithoutCarrier(t *testing.T) {
	r := startResponder(t, []time.Duration{0, 30 * time.Millisecond})
	r.noCarrier.Store(true)
	// Won while the link was down: neither sent nor kept for later.
	if err := r.Set([]netip.Addr{vip4}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r.Responder.mu.Lock()
		defer r.Responder.mu.Unlock()
		return len(r.Responder.pending) == 0
	}, "the announcement schedule to run out")
	r.noCarrier.Store(false)
	r.arp.noFrame(t, 100*time.Millisecond, "announcements due while the link was down")

	// Requests are still answered: the address is ours as far as we know.
	r.arp.in <- arpFrame(t, arp.OperationRequest, clientMAC, clientIP, vip4)
	if got := decodeARP(t, r.arp.next(t, "ARP reply")); got.SenderIP != vip4 || got.Op != arp.OperationReply {
		t.Errorf("frame out = %+v, want a reply for %v", got, vip4)
	}
	if got := r.Stats().Announcements; got != 0 {
		t.Errorf("Stats().Announcements = %d, want 0", got)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

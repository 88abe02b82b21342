package layer2

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeHost is a node's interfaces with fake sockets behind them.
type fakeHost struct {
	mu     sync.Mutex
	ifaces []net.Interface
	conns  map[string][]Conns // every Conns dialled per interface, in order
}

func (h *fakeHost) interfaces() ([]net.Interface, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ifaces), nil
}

func (h *fakeHost) dial(ifi *net.Interface) (Conns, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ifi.Name == "broken0" {
		return Conns{}, errors.New("no sockets for you")
	}
	c := Conns{ARP: newFakeConn(), NDP: newFakeConn(), Groups: &fakeGroups{}}
	if h.conns == nil {
		h.conns = map[string][]Conns{}
	}
	h.conns[ifi.Name] = append(h.conns[ifi.Name], c)
	return c, nil
}

func (h *fakeHost) dialled(name string) []Conns {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.conns[name])
}

func (h *fakeHost) enslaved(name string) bool { return name == "eth3" }

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, b} }

const ethFlags = net.FlagUp | net.FlagRunning | net.FlagBroadcast | net.FlagMulticast

func newFakeHost() *fakeHost {
	return &fakeHost{ifaces: []net.Interface{
		{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback},
		{Index: 2, Name: "eth0", Flags: ethFlags, HardwareAddr: mac(2), MTU: 1500},
		{Index: 3, Name: "eth1", Flags: ethFlags, HardwareAddr: mac(3), MTU: 1500},
		{Index: 4, Name: "eth2", Flags: net.FlagBroadcast | net.FlagMulticast, HardwareAddr: mac(4), MTU: 1500}, // down
		{Index: 5, Name: "cali1234", Flags: ethFlags, HardwareAddr: mac(5), MTU: 1500},
		{Index: 6, Name: "kube-ipvs0", Flags: ethFlags, HardwareAddr: mac(6), MTU: 1500},
		{Index: 7, Name: "eth3", Flags: ethFlags, HardwareAddr: mac(7), MTU: 1500}, // bond member
	}}
}

func startResponders(t *testing.T, h *fakeHost) (*Responders, func()) {
	t.Helper()
	r := New(Config{Interfaces: h.interfaces, Dial: h.dial, Schedule: []time.Duration{}, Resync: time.Hour, enslaved: h.enslaved})
	return r, runInBackground(t, r.Start)
}

// waitOwned polls until Owned() matches want: Start applies asynchronously.
func waitOwned(t *testing.T, r *Responders, want map[string][]netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.Owned()
		if cmp.Equal(want, got, addrCmp) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Owned() mismatch (-want +got):\n%s", cmp.Diff(want, got, addrCmp))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSyncPlacesAddressesOnInterfaces(t *testing.T) {
	h := newFakeHost()
	r, _ := startResponders(t, h)
	err := r.Sync(context.Background(), map[netip.Addr][]string{
		vip4:   nil,                                // every suitable interface
		vip6:   {"eth1"},                           // only the one named
		other4: {"kube-ipvs0", "missing0", "eth2"}, // named but excluded by default is fine; missing and down are skipped
	})
	if err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	waitOwned(t, r, map[string][]netip.Addr{
		"eth0":       {vip4},
		"eth1":       {vip4, vip6},
		"kube-ipvs0": {other4},
	})
}

func TestSyncIsLevelTriggered(t *testing.T) {
	h := newFakeHost()
	r, stop := startResponders(t, h)
	if err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth1"}}); err != nil {
		t.Fatal(err)
	}
	waitOwned(t, r, map[string][]netip.Addr{"eth0": {vip4}, "eth1": {vip6}})

	// The same state again changes nothing: no new sockets.
	if err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0"}, vip6: {"eth1"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.dialled("eth0")); n != 1 {
		t.Errorf("eth0 dialled %d times for an unchanged state, want 1", n)
	}

	// eth1 has nothing left: its responder stops and closes its sockets.
	if err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	waitOwned(t, r, map[string][]netip.Addr{"eth0": {vip4}})
	eth1 := h.dialled("eth1")[0]
	if !eth1.ARP.(*fakeConn).isClosed() || !eth1.NDP.(*fakeConn).isClosed() {
		t.Errorf("eth1 sockets still open after it lost every address")
	}

	stop()
	eth0 := h.dialled("eth0")[0]
	if !eth0.ARP.(*fakeConn).isClosed() {
		t.Errorf("eth0 sockets still open after Start returned")
	}
}

func TestSyncBeforeStart(t *testing.T) {
	h := newFakeHost()
	r := New(Config{Interfaces: h.interfaces, Dial: h.dial, Schedule: []time.Duration{}, enslaved: h.enslaved})
	if err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0"}}); err != nil {
		t.Fatalf("Sync() before Start = %v", err)
	}
	if n := len(h.dialled("eth0")); n != 0 {
		t.Fatalf("Sync() before Start opened %d sockets, want none until Start", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := r.Start(ctx); err != nil {
			t.Errorf("Start() = %v", err)
		}
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitOwned(t, r, map[string][]netip.Addr{"eth0": {vip4}})
}

func TestSyncReportsDialFailure(t *testing.T) {
	h := newFakeHost()
	h.ifaces = append(h.ifaces, net.Interface{Index: 9, Name: "broken0", Flags: ethFlags, HardwareAddr: mac(9), MTU: 1500})
	r, _ := startResponders(t, h)
	// Wait for Start to have run, so that Sync applies synchronously.
	if err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0"}}); err != nil {
		t.Fatal(err)
	}
	waitOwned(t, r, map[string][]netip.Addr{"eth0": {vip4}})
	err := r.Sync(context.Background(), map[netip.Addr][]string{vip4: {"eth0", "broken0"}})
	if err == nil {
		t.Fatal("Sync() = nil, want the dial error for broken0")
	}
	// The interface that works still answers.
	waitOwned(t, r, map[string][]netip.Addr{"eth0": {vip4}})
}

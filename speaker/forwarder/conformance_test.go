package forwarder

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// readableTable is a Table that can also say what the kernel holds.
type readableTable interface {
	Table
	Cleaner
	Read(ctx context.Context) ([]VirtualService, error)
}

// service builds a virtual service on the lab's address of vip's family
// with the given lab backends (1-based).
func (l *lab) service(vip netip.Addr, proto Protocol, masq bool, backends ...int) VirtualService {
	vs := VirtualService{Key: Key{Addr: vip, Port: 80, Protocol: proto}, Masquerade: masq}
	port := uint16(backendTCPPort)
	if proto == UDP {
		vs.Port, port = 53, backendUDPPort
	}
	for _, i := range backends {
		b := l.backends[i-1]
		addr := b.addr4
		if vip.Is6() {
			addr = b.addr6
		}
		vs.Backends = append(vs.Backends, Backend{Addr: addr, Port: port, Weight: DefaultWeight})
	}
	return vs
}

// ask sends n requests to vs, each on a new connection or socket, retrying
// a failed one until a generous deadline: the first packets may wait for
// neighbour resolution on a loaded machine.
func (l *lab) ask(t *testing.T, vs VirtualService, n int) []answer {
	t.Helper()
	ctx := t.Context()
	to := netip.AddrPortFrom(vs.Addr, vs.Port)
	var got []answer
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < n {
		var a answer
		var err error
		if vs.Protocol == UDP {
			a, err = l.query(ctx, to)
		} else {
			a, err = l.get(ctx, to)
		}
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("request %d to %s: %v", len(got)+1, vs.Key, err)
			}
			continue
		}
		got = append(got, a)
	}
	return got
}

// clientFlow is one client UDP socket: all its datagrams are one flow.
type clientFlow struct {
	c  net.Conn
	to netip.AddrPort
}

func (l *lab) openFlow(t *testing.T, to netip.AddrPort) *clientFlow {
	t.Helper()
	c, err := l.dialFromClient(t.Context(), "udp", to)
	if err != nil {
		t.Fatalf("UDP socket to %s: %v", to, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &clientFlow{c: c, to: to}
}

// exchange sends a datagram and returns the answer, sending again after a
// second without one, until a generous deadline.
func (f *clientFlow) exchange(t *testing.T) answer {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 1500)
	for {
		_ = f.c.SetDeadline(time.Now().Add(time.Second))
		_, err := f.c.Write([]byte("who"))
		var n int
		if err == nil {
			n, err = f.c.Read(buf)
		}
		if err == nil {
			a, err := parseAnswer(string(buf[:n]))
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("UDP flow to %s: %v", f.to, err)
		}
	}
}

// refused checks that a request to vs gets no answer from any backend.
func (l *lab) refused(t *testing.T, vs VirtualService) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	to := netip.AddrPortFrom(vs.Addr, vs.Port)
	var a answer
	var err error
	if vs.Protocol == UDP {
		a, err = l.query(ctx, to)
	} else {
		a, err = l.get(ctx, to)
	}
	if err == nil {
		t.Errorf("request to %s answered by %s, want no answer", vs.Key, a.backend)
	}
}

func backendsOf(answers []answer) []string {
	var names []string
	for _, a := range answers {
		if !slices.Contains(names, a.backend) {
			names = append(names, a.backend)
		}
	}
	slices.Sort(names)
	return names
}

func clientsOf(answers []answer) []netip.Addr {
	var addrs []netip.Addr
	for _, a := range answers {
		if !slices.Contains(addrs, a.client) {
			addrs = append(addrs, a.client)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}

func mustSync(t *testing.T, tbl Table, services ...VirtualService) {
	t.Helper()
	if err := tbl.Sync(t.Context(), services); err != nil {
		t.Fatalf("Sync(%d services): %v", len(services), err)
	}
}

// testConformance runs the cases every forwarding backend must pass, on a
// lab with three backends whose node namespace tbl programs.
func testConformance(t *testing.T, l *lab, tbl readableTable) {
	all := []string{"backend1", "backend2", "backend3"}

	t.Run("reads back what it wrote", func(t *testing.T) {
		sticky := l.service(labVIP4, TCP, true, 1, 2)
		sticky.Affinity = 3 * time.Hour
		sticky.Scheduler = SourceHashing
		sticky.Port = 443
		drained := l.service(labVIP6, UDP, false, 1, 2, 3)
		drained.Backends[0].Weight = 0
		drained.Scheduler = WeightedLeastConnection
		table := []VirtualService{l.service(labVIP4, TCP, true, 1, 2, 3), sticky, drained, l.service(labVIP4, UDP, false)}
		mustSync(t, tbl, table...)
		got, err := tbl.Read(t.Context())
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		want, _ := Prepare(table)
		if diff := cmp.Diff(want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Read() after Sync mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("round robin reaches every backend", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 1, 2, 3)
		mustSync(t, tbl, vs)
		if diff := cmp.Diff(all, backendsOf(l.ask(t, vs, 9))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})

	t.Run("masquerade shows the node as client", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 2)
		mustSync(t, tbl, vs)
		want := []netip.Addr{l.backends[1].gw4}
		if diff := cmp.Diff(want, clientsOf(l.ask(t, vs, 3)), addrCmp); diff != "" {
			t.Errorf("client addresses seen by the backend (-want +got):\n%s", diff)
		}
	})

	t.Run("no masquerade preserves the client address", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, false, 1, 2, 3)
		mustSync(t, tbl, vs)
		want := []netip.Addr{clientAddr4}
		if diff := cmp.Diff(want, clientsOf(l.ask(t, vs, 6)), addrCmp); diff != "" {
			t.Errorf("client addresses seen by the backends (-want +got):\n%s", diff)
		}
	})

	t.Run("affinity keeps a client on one backend", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 1, 2, 3)
		vs.Affinity = 10 * time.Minute
		mustSync(t, tbl, vs)
		if got := backendsOf(l.ask(t, vs, 9)); len(got) != 1 {
			t.Errorf("one client reached backends %v, want exactly one", got)
		}
	})

	t.Run("UDP reaches every backend", func(t *testing.T) {
		vs := l.service(labVIP4, UDP, true, 1, 2, 3)
		mustSync(t, tbl, vs)
		if diff := cmp.Diff(all, backendsOf(l.ask(t, vs, 9))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})

	// One socket keeps its source port, so every datagram belongs to one
	// conntrack entry: only forgetting that entry moves the flow.
	t.Run("UDP flow leaves a removed backend", func(t *testing.T) {
		for _, vip := range []netip.Addr{labVIP4, labVIP6} {
			vs := l.service(vip, UDP, true, 1, 2)
			mustSync(t, tbl, vs)
			flow := l.openFlow(t, netip.AddrPortFrom(vs.Addr, vs.Port))
			first := flow.exchange(t).backend
			for range 3 {
				if got := flow.exchange(t).backend; got != first {
					t.Fatalf("%s: one UDP flow reached %s, then %s; want one backend", vip, first, got)
				}
			}
			keep := 2
			if first == "backend2" {
				keep = 1
			}
			mustSync(t, tbl, l.service(vip, UDP, true, keep))
			if got, want := flow.exchange(t).backend, fmt.Sprintf("backend%d", keep); got != want {
				t.Errorf("%s: after %s was removed the flow reached %s, want %s", vip, first, got, want)
			}
		}
	})

	t.Run("IPv6 service", func(t *testing.T) {
		vs := l.service(labVIP6, TCP, false, 1, 2, 3)
		mustSync(t, tbl, vs)
		answers := l.ask(t, vs, 9)
		if diff := cmp.Diff(all, backendsOf(answers)); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]netip.Addr{clientAddr6}, clientsOf(answers), addrCmp); diff != "" {
			t.Errorf("client addresses seen by the backends (-want +got):\n%s", diff)
		}
	})

	t.Run("removed backend gets no more connections", func(t *testing.T) {
		mustSync(t, tbl, l.service(labVIP4, TCP, true, 1, 2, 3))
		vs := l.service(labVIP4, TCP, true, 1, 2)
		mustSync(t, tbl, vs)
		if diff := cmp.Diff(all[:2], backendsOf(l.ask(t, vs, 9))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})

	t.Run("added backend gets connections", func(t *testing.T) {
		mustSync(t, tbl, l.service(labVIP4, TCP, true, 1))
		vs := l.service(labVIP4, TCP, true, 1, 3)
		mustSync(t, tbl, vs)
		if diff := cmp.Diff([]string{"backend1", "backend3"}, backendsOf(l.ask(t, vs, 6))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})

	t.Run("drained backend gets no new connections", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 1, 2, 3)
		vs.Backends[0].Weight = 0
		mustSync(t, tbl, vs)
		if diff := cmp.Diff(all[1:], backendsOf(l.ask(t, vs, 9))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})

	t.Run("service without backends answers nothing", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true)
		mustSync(t, tbl, vs)
		l.refused(t, vs)
	})

	t.Run("removed service is gone", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 1)
		mustSync(t, tbl, vs)
		l.ask(t, vs, 1)
		mustSync(t, tbl)
		got, err := tbl.Read(t.Context())
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("Read() after Sync(nil) = %v, want nothing", got)
		}
		l.refused(t, vs)
	})

	t.Run("cleanup removes what it installed", func(t *testing.T) {
		vs := l.service(labVIP4, TCP, true, 1, 2)
		mustSync(t, tbl, vs, l.service(labVIP6, UDP, false, 3))
		l.ask(t, vs, 1)
		if err := tbl.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		l.refused(t, vs)
		got, err := tbl.Read(t.Context())
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("Read() after Cleanup = %v, want nothing", got)
		}
		// A second Cleanup has nothing left to remove; a later Sync
		// installs again.
		if err := tbl.Cleanup(t.Context()); err != nil {
			t.Errorf("second Cleanup: %v", err)
		}
		mustSync(t, tbl, vs)
		if diff := cmp.Diff([]string{"backend1", "backend2"}, backendsOf(l.ask(t, vs, 6))); diff != "" {
			t.Errorf("backends reached after Cleanup and Sync (-want +got):\n%s", diff)
		}
	})
}

package forwarder

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

func newNFTables(t testing.TB, ns netns.NsHandle) *NFTables {
	t.Helper()
	n, err := NewNFTables(NFTablesConfig{NetNS: int(ns)})
	if err != nil {
		t.Fatalf("NewNFTables: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// dumpRuleset logs the node's ruleset when a test fails, if nft is there.
func dumpRuleset(t *testing.T, ns netns.NsHandle) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var out []byte
		_ = withNetNS(ns, func() error {
			var err error
			out, err = exec.Command("nft", "list", "ruleset").CombinedOutput()
			return err
		})
		t.Logf("nft list ruleset:\n%s", out)
	})
}

func TestNFTablesConformance(t *testing.T) {
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	testConformance(t, l, newNFTables(t, l.node))
}

// ruleHandles lists the handles of the rules in a service's chain: they
// change exactly when the chain is rewritten.
func ruleHandles(t *testing.T, ns netns.NsHandle, k Key) []uint64 {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatalf("nftables conn: %v", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: defaultTable}
	rules, err := c.GetRules(table, &nftables.Chain{Name: chainName(k), Table: table})
	if err != nil {
		t.Fatalf("rules of %s: %v", k, err)
	}
	var handles []uint64
	for _, r := range rules {
		handles = append(handles, r.Handle)
	}
	return handles
}

func TestNFTablesChangeRewritesOnlyThatService(t *testing.T) {
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	n := newNFTables(t, l.node)
	web := l.service(labVIP4, TCP, true, 1, 2, 3)
	dns := l.service(labVIP4, UDP, true, 1, 2, 3)
	mustSync(t, n, web, dns)
	webBefore, dnsBefore := ruleHandles(t, l.node, web.Key), ruleHandles(t, l.node, dns.Key)

	g0, err := n.generation()
	if err != nil {
		t.Fatal(err)
	}
	web = l.service(labVIP4, TCP, true, 1, 2)
	mustSync(t, n, web, dns)
	g1, err := n.generation()
	if err != nil {
		t.Fatal(err)
	}
	if g1 != g0+1 {
		t.Errorf("one endpoint change took %d transactions, want 1", g1-g0)
	}
	if diff := cmp.Diff(dnsBefore, ruleHandles(t, l.node, dns.Key)); diff != "" {
		t.Errorf("untouched service's rules were rewritten (-before +after):\n%s", diff)
	}
	if cmp.Equal(webBefore, ruleHandles(t, l.node, web.Key)) {
		t.Errorf("changed service's rules kept handles %v, want a rewrite", webBefore)
	}
	if diff := cmp.Diff([]string{"backend1", "backend2"}, backendsOf(l.ask(t, web, 6))); diff != "" {
		t.Errorf("backends reached (-want +got):\n%s", diff)
	}

	mustSync(t, n, web, dns)
	if g2, _ := n.generation(); g2 != g1 {
		t.Errorf("a sync without changes committed %d transactions, want none", g2-g1)
	}

	// A replaced endpoint (same count) changes map elements only.
	webBefore = ruleHandles(t, l.node, web.Key)
	web = l.service(labVIP4, TCP, true, 1, 3)
	mustSync(t, n, web, dns)
	if diff := cmp.Diff(webBefore, ruleHandles(t, l.node, web.Key)); diff != "" {
		t.Errorf("replacing an endpoint rewrote the service's rules (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"backend1", "backend3"}, backendsOf(l.ask(t, web, 6))); diff != "" {
		t.Errorf("backends reached after replacing an endpoint (-want +got):\n%s", diff)
	}
}

// Someone else edits or removes ironlb's rules: the next sync notices from
// the kernel, not from memory, and repairs.
func TestNFTablesRepairsWhatOthersChanged(t *testing.T) {
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	n := newNFTables(t, l.node)
	web := l.service(labVIP4, TCP, true, 1, 2, 3)
	dns := l.service(labVIP4, UDP, true, 1, 2, 3)
	mustSync(t, n, web, dns)

	other, err := nftables.New(nftables.WithNetNSFd(int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: defaultTable}
	tamper := []struct {
		name string
		do   func()
	}{
		{"service chain flushed", func() { other.FlushChain(&nftables.Chain{Name: chainName(web.Key), Table: table}) }},
		{"base chain flushed", func() { other.FlushChain(&nftables.Chain{Name: "prerouting", Table: table}) }},
		{"table deleted", func() { other.DelTable(table) }},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			tc.do()
			if err := other.Flush(); err != nil {
				t.Fatalf("tamper: %v", err)
			}
			mustSync(t, n, web, dns)
			if diff := cmp.Diff([]string{"backend1", "backend2", "backend3"}, backendsOf(l.ask(t, web, 9))); diff != "" {
				t.Errorf("backends reached after repair (-want +got):\n%s", diff)
			}
			got, err := n.Read(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			want, _ := Prepare([]VirtualService{web, dns})
			if diff := cmp.Diff(want, got, addrCmp); diff != "" {
				t.Errorf("Read() after repair (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNFTablesInvalidServiceDoesNotBlockOthers(t *testing.T) {
	l := newLab(t, 3)
	n := newNFTables(t, l.node)
	good := l.service(labVIP4, TCP, true, 1)
	bad := l.service(labVIP4, UDP, true, 1)
	bad.Scheduler = "fastest"
	err := n.Sync(t.Context(), []VirtualService{good, bad})
	if !errors.Is(err, ErrUnknownScheduler) {
		t.Errorf("Sync() error = %v, want %v", err, ErrUnknownScheduler)
	}
	if diff := cmp.Diff([]string{"backend1"}, backendsOf(l.ask(t, good, 2))); diff != "" {
		t.Errorf("backends reached (-want +got):\n%s", diff)
	}
}

// tableExists reports whether the node holds ironlb's nftables table.
func tableExists(t *testing.T, ns netns.NsHandle) bool {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatalf("nftables conn: %v", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	for _, tb := range tables {
		if tb.Name == defaultTable {
			return true
		}
	}
	return false
}

// A stopping speaker takes its table back, but not once a successor has
// rewritten it, and never a table it did not write.
func TestNFTablesCleanup(t *testing.T) {
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	web := l.service(labVIP4, TCP, true, 1, 2)

	t.Run("own table is deleted, even after others' commits", func(t *testing.T) {
		n := newNFTables(t, l.node)
		mustSync(t, n, web)
		// Someone else's commit moves the generation; the table itself is
		// still what the sync left.
		other, err := nftables.New(nftables.WithNetNSFd(int(l.node)))
		if err != nil {
			t.Fatal(err)
		}
		other.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "someone-else"})
		if err := other.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := n.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if tableExists(t, l.node) {
			t.Errorf("table %s still exists after Cleanup", defaultTable)
		}
		l.refused(t, web)
	})

	t.Run("successor's table stays", func(t *testing.T) {
		old, successor := newNFTables(t, l.node), newNFTables(t, l.node)
		mustSync(t, old, web)
		moved := l.service(labVIP4, TCP, true, 3)
		mustSync(t, successor, moved)
		if err := old.Cleanup(t.Context()); !errors.Is(err, ErrChangedSinceSync) {
			t.Errorf("Cleanup() error = %v, want %v", err, ErrChangedSinceSync)
		}
		if diff := cmp.Diff([]string{"backend3"}, backendsOf(l.ask(t, moved, 3))); diff != "" {
			t.Errorf("backends reached after the old forwarder's Cleanup (-want +got):\n%s", diff)
		}
	})

	t.Run("a forwarder that never synced removes nothing", func(t *testing.T) {
		mustSync(t, newNFTables(t, l.node), web)
		if err := newNFTables(t, l.node).Cleanup(t.Context()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		if diff := cmp.Diff([]string{"backend1", "backend2"}, backendsOf(l.ask(t, web, 6))); diff != "" {
			t.Errorf("backends reached (-want +got):\n%s", diff)
		}
	})
}

// BenchmarkNFTablesSync measures the DESIGN target: 10,000 services x 10
// endpoints, one endpoint changes. full_sync is the first programming of
// the whole table; full_read is a sync after someone else touched the
// ruleset (the table is read back from the kernel).
func BenchmarkNFTablesSync(b *testing.B) {
	requireRoot(b)
	for _, services := range []int{1000, 10000} {
		ns := newNS(b)
		n := newNFTables(b, ns)
		a := bigTable(services, 10)
		benchSyncs(b, fmt.Sprintf("services=%d", services), n.Sync, func() error { return n.Delete(b.Context()) },
			a, oneEndpointChanged(a, services/2), map[string]func(){
				// Another program's commit makes the next sync read back.
				"after_foreign_commit": func() {
					n.mu.Lock()
					n.cacheOK = false
					n.mu.Unlock()
				},
			})
	}
}

// A table larger than one transaction is split, read back whole, and one
// change to it is still one transaction.
func TestNFTablesLargeTable(t *testing.T) {
	requireRoot(t)
	ns := newNS(t)
	n := newNFTables(t, ns)
	table := bigTable(2500, 10)
	mustSync(t, n, table...)
	got, err := n.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Prepare(table)
	if diff := cmp.Diff(want, got, addrCmp); diff != "" {
		t.Fatalf("Read() after a large Sync (-want +got):\n%s", diff)
	}
	g0, _ := n.generation()
	mustSync(t, n, oneEndpointChanged(table, 1234)...)
	if g1, _ := n.generation(); g1 != g0+1 {
		t.Errorf("one endpoint change took %d transactions, want 1", g1-g0)
	}
}

// BenchmarkNFTablesPath compares one TCP flow from the lab's client to a
// backend through the nftables forwarder (service address, DNAT and
// masquerade) with the same flow sent straight to the backend's address:
// bulk throughput over one connection, and the round trip of one byte on an
// established connection. Both paths cross the node's routing; the
// difference is the forwarder.
func BenchmarkNFTablesPath(b *testing.B) {
	l := newLab(b, 1)
	be := l.backends[0]
	const port = 9000
	var ln net.Listener
	if err := withNetNS(be.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The first byte picks the mode: 's' sinks, anything else echoes.
			go func() {
				defer c.Close()
				first := make([]byte, 1)
				if _, err := io.ReadFull(c, first); err != nil {
					return
				}
				if first[0] == 's' {
					_, _ = io.Copy(io.Discard, c)
					return
				}
				_, _ = c.Write(first)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	route(b, l.client, netip.MustParsePrefix("10.244.0.0/16"), nodeAddr4)
	vs := VirtualService{Key: Key{Addr: labVIP4, Port: port, Protocol: TCP}, Masquerade: true,
		Backends: []Backend{{Addr: be.addr4, Port: port, Weight: DefaultWeight}}}
	n := newNFTables(b, l.node)
	if err := n.Sync(b.Context(), []VirtualService{vs}); err != nil {
		b.Fatal(err)
	}
	dial := func(b *testing.B, to netip.AddrPort, mode byte) net.Conn {
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := l.dialFromClient(b.Context(), "tcp", to)
			if err == nil {
				if _, err = c.Write([]byte{mode}); err == nil {
					return c
				}
				c.Close()
			}
			if time.Now().After(deadline) {
				b.Fatalf("dial %s: %v", to, err)
			}
		}
	}
	for _, path := range []struct {
		name string
		to   netip.AddrPort
	}{{"direct", netip.AddrPortFrom(be.addr4, port)}, {"forwarded", netip.AddrPortFrom(labVIP4, port)}} {
		b.Run("path="+path.name+"/throughput", func(b *testing.B) {
			c := dial(b, path.to, 's')
			defer c.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("path="+path.name+"/round_trip", func(b *testing.B) {
			c := dial(b, path.to, 'e')
			defer c.Close()
			one := make([]byte, 1)
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

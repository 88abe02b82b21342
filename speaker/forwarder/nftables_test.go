package forwarder

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"

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
		c := oneEndpointChanged(a, services/2)
		b.Run(fmt.Sprintf("services=%d/full_sync", services), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if err := n.Delete(b.Context()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := n.Sync(b.Context(), a); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/one_change", services), func(b *testing.B) {
			i := 0
			for b.Loop() {
				table := a
				if i%2 == 0 {
					table = c
				}
				i++
				if err := n.Sync(b.Context(), table); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/one_change_after_foreign_commit", services), func(b *testing.B) {
			i := 0
			for b.Loop() {
				table := a
				if i%2 == 0 {
					table = c
				}
				i++
				n.mu.Lock()
				n.cacheOK = false
				n.mu.Unlock()
				if err := n.Sync(b.Context(), table); err != nil {
					b.Fatal(err)
				}
			}
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

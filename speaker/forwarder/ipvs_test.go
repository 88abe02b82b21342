package forwarder

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

func TestIPVSServiceConversion(t *testing.T) {
	tests := []struct {
		name string
		in   VirtualService
		want ipvs.Service
	}{
		{
			name: "IPv4 TCP, default scheduler",
			in:   VirtualService{Key: Key{Addr: vip4, Port: 80, Protocol: TCP}},
			want: ipvs.Service{Address: vip4.AsSlice(), Protocol: unix.IPPROTO_TCP, Port: 80, SchedName: "rr", AddressFamily: unix.AF_INET, Netmask: 0xffffffff},
		},
		{
			name: "IPv6 UDP with ClientIP affinity",
			in:   VirtualService{Key: Key{Addr: vip6, Port: 53, Protocol: UDP}, Scheduler: WeightedLeastConnection, Affinity: 3 * time.Hour},
			want: ipvs.Service{Address: vip6.AsSlice(), Protocol: unix.IPPROTO_UDP, Port: 53, SchedName: "wlc", AddressFamily: unix.AF_INET6, Netmask: 128, Flags: ipvsPersistent, Timeout: 10800},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := toIPVSService(tc.in)
			if diff := cmp.Diff(tc.want, *got); diff != "" {
				t.Errorf("toIPVSService(%v) mismatch (-want +got):\n%s", tc.in.Key, diff)
			}
			// The kernel reports its hashed flag too; it must not read as a
			// difference.
			got.Flags |= ipvsHashed
			back, ok := fromIPVSService(got)
			if !ok {
				t.Fatalf("fromIPVSService(%+v) refused its own service", got)
			}
			want, _ := Prepare([]VirtualService{tc.in})
			if diff := cmp.Diff(want[0], back, addrCmp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIPVSForeignServicesAreNotOurs(t *testing.T) {
	for _, s := range []*ipvs.Service{
		{FWMark: 42, AddressFamily: unix.AF_INET},
		{Address: vip4.AsSlice(), Protocol: unix.IPPROTO_SCTP, Port: 80},
		{Address: []byte{1, 2, 3}, Protocol: unix.IPPROTO_TCP, Port: 80},
	} {
		if vs, ok := fromIPVSService(s); ok {
			t.Errorf("fromIPVSService(%+v) = %v, want it refused", s, vs)
		}
	}
}

func TestIPVSDestinationConversion(t *testing.T) {
	for _, b := range []Backend{
		{Addr: netip.MustParseAddr("10.244.1.2"), Port: 8080, Weight: 1},
		{Addr: netip.MustParseAddr("fd00:10:244:1::2"), Port: 8080, Weight: 0},
	} {
		d := toIPVSDestination(b)
		if d.ConnectionFlags&ipvs.ConnectionFlagFwdMask != ipvs.ConnectionFlagMasq {
			t.Errorf("toIPVSDestination(%v) forwarding %#x, want masquerading (NAT)", b.AddrPort(), d.ConnectionFlags)
		}
		got, ok := fromIPVSDestination(d)
		if !ok || got != b {
			t.Errorf("destination round trip = %v, %v; want %v", got, ok, b)
		}
	}
}

func TestAvailable(t *testing.T) {
	ok, reason := Available()
	if reason == "" {
		t.Errorf("Available() = %v with no reason", ok)
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil && !ok {
		t.Errorf("Available() = false (%s) although /proc/net/ip_vs exists", reason)
	}
	t.Logf("Available() = %v: %s", ok, reason)
}

func newIPVS(t *testing.T, l *lab) *IPVS {
	t.Helper()
	if ok, reason := Available(); !ok {
		t.Skip(reason)
	}
	v, err := NewIPVS(IPVSConfig{NetNS: l.node})
	if err != nil {
		t.Fatalf("NewIPVS: %v", err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// TestIPVSConformance runs where the kernel has IPVS: in the VM that
// hack/ipvs-vm.sh boots.
func TestIPVSConformance(t *testing.T) {
	requireRoot(t)
	if ok, reason := Available(); !ok {
		t.Skip(reason)
	}
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	testConformance(t, l, newIPVS(t, l))
}

func TestIPVSBindsServiceAddressesWithoutARP(t *testing.T) {
	requireRoot(t)
	if ok, reason := Available(); !ok {
		t.Skip(reason)
	}
	l := newLab(t, 1)
	v := newIPVS(t, l)
	mustSync(t, v, l.service(labVIP4, TCP, true, 1), l.service(labVIP6, TCP, true, 1))
	h := handleAt(t, l.node)
	dummy, err := h.LinkByName(defaultInterface)
	if err != nil {
		t.Fatalf("service addresses need %s: %v", defaultInterface, err)
	}
	bound, err := v.bound(dummy)
	if err != nil {
		t.Fatal(err)
	}
	if !bound[labVIP4] || !bound[labVIP6] {
		t.Errorf("%s holds %v, want %v and %v", defaultInterface, bound, labVIP4, labVIP6)
	}
	for path, want := range map[string]string{
		"/proc/sys/net/ipv4/conf/all/arp_ignore":   "1",
		"/proc/sys/net/ipv4/conf/all/arp_announce": "2",
		"/proc/sys/net/ipv4/vs/conntrack":          "1",
	} {
		var got []byte
		if err := withNetNS(l.node, func() error { got, err = os.ReadFile(path); return err }); err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	mustSync(t, v)
	if bound, err = v.bound(dummy); err != nil || len(bound) != 0 {
		t.Errorf("after Sync(nil) %s holds %v (%v), want nothing", defaultInterface, bound, err)
	}
}

// BenchmarkIPVSSync is BenchmarkNFTablesSync's counterpart; it runs in the
// VM (BENCH=IPVS hack/ipvs-vm.sh). IPVS has no generation counter, so
// every sync reads every service's destinations back.
func BenchmarkIPVSSync(b *testing.B) {
	requireRoot(b)
	if ok, reason := Available(); !ok {
		b.Skip(reason)
	}
	for _, services := range []int{1000, 10000} {
		ns := newNS(b)
		loUp(b, ns)
		v, err := NewIPVS(IPVSConfig{NetNS: ns})
		if err != nil {
			b.Fatal(err)
		}
		a := bigTable(services, 10)
		c := oneEndpointChanged(a, services/2)
		b.Run(fmt.Sprintf("services=%d/full_sync", services), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if err := v.Sync(b.Context(), nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := v.Sync(b.Context(), a); err != nil {
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
				if err := v.Sync(b.Context(), table); err != nil {
					b.Fatal(err)
				}
			}
		})
		_ = v.Close()
	}
}

func TestIPVSTrustedRotatesAndSkipsChanges(t *testing.T) {
	known := bigTable(600, 2)
	v := &IPVS{known: known}
	desired := oneEndpointChanged(known, 500)
	seen := map[Key]int{}
	for sync := 0; sync < 3; sync++ {
		trusted := v.trusted(desired)
		if _, ok := trusted[known[500].Key]; ok {
			t.Fatalf("sync %d trusts the service whose endpoints change", sync)
		}
		if got, want := len(trusted), len(known)-verifyWindow-1; got != want && got != want+1 {
			t.Errorf("sync %d trusts %d services, want about %d", sync, got, want)
		}
		for _, vs := range known {
			if _, ok := trusted[vs.Key]; !ok {
				seen[vs.Key]++
			}
		}
	}
	// Three windows of 256 cover all 600 services.
	if len(seen) != len(known) {
		t.Errorf("three syncs re-read %d of %d services, want all", len(seen), len(known))
	}
	if (&IPVS{}).trusted(desired) != nil {
		t.Errorf("with no previous sync, trusted() must ask for a full read")
	}
}

// Someone else removes a destination: the next sync reads it back and
// repairs it.
func TestIPVSRepairsWhatOthersChanged(t *testing.T) {
	requireRoot(t)
	if ok, reason := Available(); !ok {
		t.Skip(reason)
	}
	l := newLab(t, 3)
	v := newIPVS(t, l)
	web := l.service(labVIP4, TCP, true, 1, 2, 3)
	mustSync(t, v, web)
	other, err := ipvs.New(fmt.Sprintf("/proc/self/fd/%d", int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.DelDestination(toIPVSService(web), toIPVSDestination(web.Backends[2])); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	mustSync(t, v, web)
	if diff := cmp.Diff([]string{"backend1", "backend2", "backend3"}, backendsOf(l.ask(t, web, 9))); diff != "" {
		t.Errorf("backends reached after repair (-want +got):\n%s", diff)
	}
}

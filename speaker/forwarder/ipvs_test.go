package forwarder

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
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
	if !ok && os.Getenv(mustHaveIPVS) == "1" {
		t.Errorf("%s=1 but Available() = false: %s", mustHaveIPVS, reason)
	}
}

func newIPVS(t *testing.T, l *lab) *IPVS {
	t.Helper()
	requireIPVS(t)
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
	requireIPVS(t)
	l := newLab(t, 3)
	dumpRuleset(t, l.node)
	testConformance(t, l, newIPVS(t, l))
}

func TestIPVSBindsServiceAddressesWithoutARP(t *testing.T) {
	requireIPVS(t)
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
		"/proc/sys/net/ipv4/vs/expire_nodest_conn": "1",
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

	// A clean stop takes the interface and the masquerade table away too.
	mustSync(t, v, l.service(labVIP4, TCP, true, 1))
	if err := v.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if _, err := h.LinkByName(defaultInterface); err == nil {
		t.Errorf("%s still exists after Cleanup", defaultInterface)
	}
	if tableExists(t, l.node) {
		t.Errorf("masquerade table %s still exists after Cleanup", defaultTable)
	}
}

// BenchmarkIPVSSync is BenchmarkNFTablesSync's counterpart; it runs in the
// VM (BENCH=IPVS hack/ipvs-vm.sh). one_change runs between full reads:
// it reads back the changed service and the verify window only.
func BenchmarkIPVSSync(b *testing.B) {
	requireIPVS(b)
	for _, services := range []int{1000, 10000} {
		ns := newNS(b)
		loUp(b, ns)
		v, err := NewIPVS(IPVSConfig{NetNS: ns})
		if err != nil {
			b.Fatal(err)
		}
		a := bigTable(services, 10)
		benchSyncs(b, fmt.Sprintf("services=%d", services), v.Sync, func() error { return v.Sync(b.Context(), nil) },
			a, oneEndpointChanged(a, services/2), nil)
		_ = v.Close()
	}
}

func TestIPVSTouchedRotatesAndFindsChanges(t *testing.T) {
	known := bigTable(600, 2)
	v := &IPVS{known: known}
	desired := oneEndpointChanged(known, 500)
	added := VirtualService{Key: Key{Addr: netip.MustParseAddr("172.27.0.1"), Port: 80, Protocol: TCP}, Scheduler: RoundRobin}
	desired = append(slices.Delete(desired, 100, 101), added)
	changed := []Key{known[100].Key, known[500].Key, added.Key}
	seen := map[Key]bool{}
	for sync := 0; sync < (len(known)+verifyWindow-1)/verifyWindow; sync++ {
		keys := v.touched(desired)
		for _, k := range changed {
			if !slices.Contains(keys, k) {
				t.Fatalf("sync %d does not read back %v, which changes", sync, k)
			}
		}
		if len(keys) > len(changed)+verifyWindow {
			t.Fatalf("sync %d reads back %d services, want at most %d", sync, len(keys), len(changed)+verifyWindow)
		}
		if !slices.IsSortedFunc(keys, compareKeys) {
			t.Fatalf("sync %d: keys not sorted", sync)
		}
		for _, k := range keys {
			seen[k] = true
		}
	}
	// One rotation re-reads every service once.
	for _, vs := range known {
		if !seen[vs.Key] {
			t.Errorf("a rotation of %d syncs never re-read %v", (len(known)+verifyWindow-1)/verifyWindow, vs.Key)
		}
	}
}

// Between full reads a sync trusts what it left, but no longer than
// ReadBackInterval: what another program changed where no sync looks (an
// address unbound, a service of its own on a service address, a sysctl) is
// repaired by the first sync after the interval.
func TestIPVSRepairsWithinReadBackInterval(t *testing.T) {
	requireIPVS(t)
	l := newLab(t, 3)
	v := newIPVS(t, l)
	clock := time.Now()
	v.now = func() time.Time { return clock }
	web := l.service(labVIP4, TCP, true, 1, 2, 3)
	mustSync(t, v, web)

	h := handleAt(t, l.node)
	dummy, err := h.LinkByName(defaultInterface)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ipvs.New(fmt.Sprintf("/proc/self/fd/%d", int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	stray := toIPVSService(VirtualService{Key: Key{Addr: labVIP4, Port: 8443, Protocol: TCP}})
	if err := other.NewService(stray); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	if err := h.AddrDel(dummy, hostAddr(labVIP4)); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	writeSysctl(t, l.node, "/proc/sys/net/ipv4/conf/all/arp_ignore", "0")

	type state struct {
		Bound       bool
		StrayExists bool
		ARPIgnore   string
	}
	observe := func() state {
		t.Helper()
		bound, err := v.bound(dummy)
		if err != nil {
			t.Fatal(err)
		}
		var arp []byte
		if err := withNetNS(l.node, func() error {
			arp, err = os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return state{Bound: bound[labVIP4], StrayExists: other.IsServicePresent(stray), ARPIgnore: strings.TrimSpace(string(arp))}
	}
	for _, step := range []struct {
		name    string
		elapsed time.Duration
		want    state
	}{
		// Trusted: nothing in web's table changes, so nothing is read.
		{"within the interval", defaultReadBack / 2, state{Bound: false, StrayExists: true, ARPIgnore: "0"}},
		{"after the interval", defaultReadBack, state{Bound: true, StrayExists: false, ARPIgnore: "1"}},
	} {
		clock = clock.Add(step.elapsed)
		mustSync(t, v, web)
		if diff := cmp.Diff(step.want, observe()); diff != "" {
			t.Errorf("%s: node state (-want +got):\n%s", step.name, diff)
		}
	}
	if diff := cmp.Diff([]string{"backend1", "backend2", "backend3"}, backendsOf(l.ask(t, web, 9))); diff != "" {
		t.Errorf("backends reached after repair (-want +got):\n%s", diff)
	}
}

// Someone else removes a destination: the next sync reads it back and
// repairs it.
func TestIPVSRepairsWhatOthersChanged(t *testing.T) {
	requireIPVS(t)
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

// prepare reuses the last sync's services but must answer as Prepare does.
func TestIPVSPrepareMatchesPrepare(t *testing.T) {
	known, _ := Prepare(bigTable(50, 3))
	mapped := cloneSlice(known)
	mapped[10].Addr = netip.AddrFrom16(known[10].Addr.As16())
	invalid := cloneSlice(known)
	invalid[20].Scheduler = "nope"
	unsorted := cloneSlice(known)
	unsorted[0], unsorted[1] = unsorted[1], unsorted[0]
	duplicate := append(cloneSlice(known[:5]), known[4:]...)
	noScheduler := cloneSlice(known)
	noScheduler[30].Scheduler = ""
	tests := []struct {
		name string
		in   []VirtualService
	}{
		{"unchanged", known},
		{"one endpoint changed", oneEndpointChanged(known, 7)},
		{"one removed, one added", append(cloneSlice(known[1:]), VirtualService{Key: Key{Addr: netip.MustParseAddr("172.27.0.1"), Port: 80, Protocol: TCP}})},
		{"not canonical: default scheduler", noScheduler},
		{"not canonical: mapped address", mapped},
		{"invalid scheduler", invalid},
		{"unsorted", unsorted},
		{"duplicate", duplicate},
		{"empty", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr := Prepare(tc.in)
			got, err := (&IPVS{known: known}).prepare(tc.in)
			if diff := cmp.Diff(want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("prepare mismatch with Prepare (-want +got):\n%s", diff)
			}
			for _, sentinel := range []error{ErrInvalidService, ErrUnknownScheduler, ErrDuplicateService} {
				if errors.Is(err, sentinel) != errors.Is(wantErr, sentinel) {
					t.Errorf("prepare error %v, Prepare error %v", err, wantErr)
				}
			}
		})
	}
}

// A sync between full reads takes a new service as absent; if another
// program added it meanwhile, the sync fails (EEXIST) and the next one
// reads everything and repairs it.
func TestIPVSNetlinkErrorForcesFullRead(t *testing.T) {
	requireIPVS(t)
	l := newLab(t, 3)
	v := newIPVS(t, l)
	web := l.service(labVIP4, TCP, true, 1, 2)
	mustSync(t, v, web)
	other, err := ipvs.New(fmt.Sprintf("/proc/self/fd/%d", int(l.node)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	web2 := l.service(labVIP4, TCP, true, 3)
	web2.Port++
	foreign := toIPVSService(VirtualService{Key: web2.Key, Scheduler: WeightedLeastConnection})
	if err := other.NewService(foreign); err != nil {
		t.Fatalf("tamper: %v", err)
	}
	if err := v.Sync(t.Context(), []VirtualService{web, web2}); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("Sync over a service another program added = %v, want EEXIST", err)
	}
	mustSync(t, v, web, web2)
	got, err := v.Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Prepare([]VirtualService{web, web2})
	if diff := cmp.Diff(want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("IPVS after repair (-want +got):\n%s", diff)
	}
}

// mustHaveIPVS names the environment variable hack/ipvs-vm.sh sets inside
// the VM: there a kernel without IPVS is a broken VM (a module that did not
// load), and the IPVS tests fail instead of skipping.
const mustHaveIPVS = "IRONLB_REQUIRE_IPVS"

// requireIPVS skips unless run as root on a kernel with IPVS (the VM);
// with IRONLB_REQUIRE_IPVS=1 a missing IPVS fails the test.
func requireIPVS(t testing.TB) {
	t.Helper()
	ok, reason := Available()
	if !ok && os.Getenv(mustHaveIPVS) == "1" {
		t.Fatalf("%s=1 but IPVS is not available: %s", mustHaveIPVS, reason)
	}
	requireRoot(t)
	if !ok {
		t.Skipf("no IPVS on this kernel (%s): make test-vm runs these tests in a VM that has it", reason)
	}
}

// An interrupted address dump is read again, and given up after a few
// tries rather than trusted.
func TestRetryInterrupted(t *testing.T) {
	calls := 0
	got, err := retryInterrupted(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Errorf("interrupted twice: got %v, %v after %d dumps, want [1 2], nil after 3", got, err, calls)
	}
	calls = 0
	if _, err := retryInterrupted(func() ([]int, error) { calls++; return nil, netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != 5 {
		t.Errorf("always interrupted: %v after %d dumps, want ErrDumpInterrupted after 5", err, calls)
	}
}

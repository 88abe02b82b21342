package forwarder

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	vip4 = netip.MustParseAddr("172.25.254.50")
	vip6 = netip.MustParseAddr("fd00:254::50")
)

func be(addr string, port uint16, weight int) Backend {
	return Backend{Addr: netip.MustParseAddr(addr), Port: port, Weight: weight}
}

func svc(addr netip.Addr, port uint16, p Protocol, backends ...Backend) VirtualService {
	return VirtualService{Key: Key{Addr: addr, Port: port, Protocol: p}, Backends: backends}
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestDiff(t *testing.T) {
	web := svc(vip4, 80, TCP, be("10.244.1.2", 8080, 1), be("10.244.2.2", 8080, 1))
	dns := svc(vip4, 53, UDP, be("10.244.1.3", 53, 1))
	webScaled := svc(vip4, 80, TCP, be("10.244.1.2", 8080, 1), be("10.244.3.2", 8080, 1))
	webDrain := svc(vip4, 80, TCP, be("10.244.1.2", 8080, 0), be("10.244.2.2", 8080, 1))
	webSticky := web
	webSticky.Affinity = 3 * time.Hour
	webWrr := web
	webWrr.Scheduler = WeightedRoundRobin
	webMasq := web
	webMasq.Masquerade = true
	webRR := web
	webRR.Scheduler = RoundRobin
	webV6 := svc(vip6, 80, TCP, be("fd00:10:244:1::2", 8080, 1))
	webUDP := svc(vip4, 80, UDP, be("10.244.1.2", 8080, 1))
	mapped := svc(netip.AddrFrom16(vip4.As16()), 80, TCP, be("::ffff:10.244.1.2", 8080, 1), be("10.244.2.2", 8080, 1))

	tests := []struct {
		name            string
		actual, desired []VirtualService
		want            Changes
	}{
		{name: "both empty"},
		{name: "equal tables", actual: []VirtualService{web, dns}, desired: []VirtualService{web, dns}},
		{name: "order of services does not matter", actual: []VirtualService{web, dns}, desired: []VirtualService{dns, web}},
		{
			name:    "new service",
			actual:  []VirtualService{web},
			desired: []VirtualService{web, dns},
			want:    Changes{Add: []VirtualService{dns}},
		},
		{
			name:    "service gone",
			actual:  []VirtualService{web, dns},
			desired: []VirtualService{web},
			want:    Changes{Delete: []Key{dns.Key}},
		},
		{
			name:    "same port other protocol is another service",
			actual:  []VirtualService{web},
			desired: []VirtualService{webUDP},
			want:    Changes{Add: []VirtualService{webUDP}, Delete: []Key{web.Key}},
		},
		{
			name:    "IPv6 service next to IPv4",
			actual:  []VirtualService{web},
			desired: []VirtualService{web, webV6},
			want:    Changes{Add: []VirtualService{webV6}},
		},
		{
			name:    "one endpoint replaced",
			actual:  []VirtualService{web, dns},
			desired: []VirtualService{webScaled, dns},
			want: Changes{Backends: []BackendChanges{{
				Service: web.Key,
				Add:     []Backend{be("10.244.3.2", 8080, 1)},
				Delete:  []Backend{be("10.244.2.2", 8080, 1)},
			}}},
		},
		{
			name:    "terminating endpoint drained by weight",
			actual:  []VirtualService{web},
			desired: []VirtualService{webDrain},
			want: Changes{Backends: []BackendChanges{{
				Service: web.Key,
				Update:  []Backend{be("10.244.1.2", 8080, 0)},
			}}},
		},
		{
			name:    "backend order does not matter",
			actual:  []VirtualService{svc(vip4, 80, TCP, be("10.244.2.2", 8080, 1), be("10.244.1.2", 8080, 1))},
			desired: []VirtualService{web},
		},
		{
			name:    "affinity added",
			actual:  []VirtualService{web},
			desired: []VirtualService{webSticky},
			want:    Changes{Update: []VirtualService{webSticky}},
		},
		{
			name:    "scheduler changed",
			actual:  []VirtualService{web},
			desired: []VirtualService{webWrr},
			want:    Changes{Update: []VirtualService{webWrr}},
		},
		{
			name:    "masquerade switched on",
			actual:  []VirtualService{web},
			desired: []VirtualService{webMasq},
			want:    Changes{Update: []VirtualService{webMasq}},
		},
		{name: "empty scheduler is rr", actual: []VirtualService{webRR}, desired: []VirtualService{web}},
		{name: "IPv4-mapped addresses equal IPv4", actual: []VirtualService{mapped}, desired: []VirtualService{web}},
		{
			name:    "settings and backends change together",
			actual:  []VirtualService{web},
			desired: []VirtualService{{Key: web.Key, Scheduler: SourceHashing, Backends: webScaled.Backends}},
			want: Changes{
				Update: []VirtualService{{Key: web.Key, Scheduler: SourceHashing, Backends: webScaled.Backends}},
				Backends: []BackendChanges{{
					Service: web.Key,
					Add:     []Backend{be("10.244.3.2", 8080, 1)},
					Delete:  []Backend{be("10.244.2.2", 8080, 1)},
				}},
			},
		},
		{
			name:    "all endpoints gone keeps the service",
			actual:  []VirtualService{dns},
			desired: []VirtualService{svc(vip4, 53, UDP)},
			want: Changes{Backends: []BackendChanges{{
				Service: dns.Key,
				Delete:  []Backend{be("10.244.1.3", 53, 1)},
			}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.actual, tc.desired)
			if diff := cmp.Diff(tc.want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Diff() mismatch (-want +got):\n%s", diff)
			}
			// Sorted inputs take the merge path: it must agree.
			sorted := Diff(sortedByKey(tc.actual), sortedByKey(tc.desired))
			if diff := cmp.Diff(tc.want, sorted, addrCmp, cmpopts.EquateEmpty(), sortChanges); diff != "" {
				t.Errorf("Diff(sorted) mismatch (-want +got):\n%s", diff)
			}
			if got.Empty() != (len(tc.want.Touched()) == 0) {
				t.Errorf("Diff().Empty() = %v with changes %+v", got.Empty(), got)
			}
		})
	}
}

var sortChanges = cmp.Options{
	cmpopts.SortSlices(func(a, b VirtualService) bool { return compareKeys(a.Key, b.Key) < 0 }),
	cmpopts.SortSlices(func(a, b Key) bool { return compareKeys(a, b) < 0 }),
	cmpopts.SortSlices(func(a, b BackendChanges) bool { return compareKeys(a.Service, b.Service) < 0 }),
}

func sortedByKey(in []VirtualService) []VirtualService {
	out := cloneSlice(in)
	slices.SortFunc(out, func(a, b VirtualService) int { return compareKeys(canonicalKey(a.Key), canonicalKey(b.Key)) })
	return out
}

func TestDiffBackToSelfIsEmpty(t *testing.T) {
	table := []VirtualService{svc(vip4, 80, TCP, be("10.244.1.2", 8080, 1))}
	if c := Diff(table, table); !c.Empty() {
		t.Errorf("Diff(t, t) = %+v, want no changes", c)
	}
}

func TestTouched(t *testing.T) {
	a := Key{Addr: vip4, Port: 80, Protocol: TCP}
	b := Key{Addr: vip4, Port: 53, Protocol: UDP}
	c := Key{Addr: vip6, Port: 80, Protocol: TCP}
	ch := Changes{
		Add:      []VirtualService{{Key: c}},
		Update:   []VirtualService{{Key: a}},
		Backends: []BackendChanges{{Service: a}},
		Delete:   []Key{b},
	}
	want := []Key{a, b, c}
	if diff := cmp.Diff(want, ch.Touched(), addrCmp); diff != "" {
		t.Errorf("Touched() mismatch (-want +got):\n%s", diff)
	}
}

func TestPrepare(t *testing.T) {
	good := svc(vip4, 80, TCP, be("10.244.2.2", 8080, 1), be("10.244.1.2", 8080, 1))
	tests := []struct {
		name    string
		in      VirtualService
		wantErr error
		want    *VirtualService
	}{
		{
			name: "canonical form",
			in:   good,
			want: &VirtualService{Key: good.Key, Scheduler: RoundRobin, Backends: []Backend{be("10.244.1.2", 8080, 1), be("10.244.2.2", 8080, 1)}},
		},
		{name: "no address", in: VirtualService{Key: Key{Port: 80, Protocol: TCP}}, wantErr: ErrInvalidService},
		{name: "port zero", in: svc(vip4, 0, TCP), wantErr: ErrInvalidService},
		{name: "SCTP", in: svc(vip4, 80, "SCTP"), wantErr: ErrInvalidService},
		{name: "unknown scheduler", in: VirtualService{Key: good.Key, Scheduler: "fastest"}, wantErr: ErrUnknownScheduler},
		{name: "negative affinity", in: VirtualService{Key: good.Key, Affinity: -time.Second}, wantErr: ErrInvalidService},
		{name: "mixed families", in: svc(vip4, 80, TCP, be("fd00:10:244:1::2", 80, 1)), wantErr: ErrInvalidService},
		{name: "negative weight", in: svc(vip4, 80, TCP, be("10.244.1.2", 80, -1)), wantErr: ErrInvalidService},
		{name: "backend twice", in: svc(vip4, 80, TCP, be("10.244.1.2", 80, 1), be("10.244.1.2", 80, 2)), wantErr: ErrInvalidService},
		{name: "backend port zero", in: svc(vip4, 80, TCP, be("10.244.1.2", 0, 1)), wantErr: ErrInvalidService},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			other := svc(vip6, 443, TCP, be("fd00:10:244:1::2", 8443, 1))
			got, err := Prepare([]VirtualService{other, tc.in})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Prepare() error = %v, want %v", err, tc.wantErr)
			}
			want := []VirtualService{}
			if tc.want != nil {
				want = append(want, *tc.want)
			}
			other.Scheduler = RoundRobin
			want = append(want, other) // valid services survive an invalid neighbour
			if diff := cmp.Diff(want, got, addrCmp, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Prepare() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrepareDuplicate(t *testing.T) {
	a := svc(vip4, 80, TCP, be("10.244.1.2", 8080, 1))
	b := svc(vip4, 80, TCP, be("10.244.2.2", 8080, 1))
	got, err := Prepare([]VirtualService{a, b})
	if !errors.Is(err, ErrDuplicateService) {
		t.Errorf("Prepare() error = %v, want %v", err, ErrDuplicateService)
	}
	if len(got) != 1 {
		t.Errorf("Prepare() kept %d services, want 1", len(got))
	}
}

// bigTable is the DESIGN target: 10,000 virtual services x 10 endpoints.
func bigTable(services, endpoints int) []VirtualService {
	table := make([]VirtualService, 0, services)
	for i := range services {
		vip := netip.AddrFrom4([4]byte{172, 26, byte(i >> 8), byte(i)})
		vs := VirtualService{Key: Key{Addr: vip, Port: 80, Protocol: TCP}, Scheduler: RoundRobin}
		for j := range endpoints {
			vs.Backends = append(vs.Backends, Backend{
				Addr: netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), Port: uint16(8000 + j), Weight: 1,
			})
		}
		table = append(table, vs)
	}
	return table
}

func oneEndpointChanged(table []VirtualService, i int) []VirtualService {
	out := cloneSlice(table)
	vs := out[i]
	vs.Backends = cloneSlice(vs.Backends)
	vs.Backends[0].Port = 7999
	out[i] = vs
	return out
}

func cloneSlice[T any](s []T) []T { return append([]T(nil), s...) }

func BenchmarkDiff(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		actual := bigTable(n, 10)
		desired := oneEndpointChanged(actual, n/2)
		b.Run(fmt.Sprintf("services=%d/one_change", n), func(b *testing.B) {
			for b.Loop() {
				if c := Diff(actual, desired); len(c.Backends) != 1 {
					b.Fatalf("Diff found %d changed services, want 1", len(c.Backends))
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/full", n), func(b *testing.B) {
			for b.Loop() {
				if c := Diff(nil, desired); len(c.Add) != n {
					b.Fatalf("Diff added %d services, want %d", len(c.Add), n)
				}
			}
		})
	}
}

// benchSyncs runs the sync benchmarks every backend shares, for table a
// and c (a with one endpoint changed): full_sync fills the backend after
// empty (untimed) cleared it; one_change alternates a and c; each entry of
// extra is one_change with its function run, timed, before every sync.
func benchSyncs(b *testing.B, name string, sync func(context.Context, []VirtualService) error, empty func() error, a, c []VirtualService, extra map[string]func()) {
	b.Run(name+"/full_sync", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if err := empty(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := sync(b.Context(), a); err != nil {
				b.Fatal(err)
			}
		}
	})
	alternate := func(before func()) func(b *testing.B) {
		return func(b *testing.B) {
			i := 0
			for b.Loop() {
				table := a
				if i%2 == 0 {
					table = c
				}
				i++
				if before != nil {
					before()
				}
				if err := sync(b.Context(), table); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run(name+"/one_change", alternate(nil))
	for suffix, before := range extra {
		b.Run(name+"/one_change_"+suffix, alternate(before))
	}
}

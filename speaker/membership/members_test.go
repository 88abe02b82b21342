package membership

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

// member is one running Members in a test.
type member struct {
	*Members
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Start returned
	err    error         // what Start returned
}

// stop ends the member cleanly (leave, then shut down) or, with crash, as a
// killed process would, and waits for Start to return.
func (m *member) stop(t testing.TB, crash bool) {
	t.Helper()
	m.mu.Lock()
	m.crashOnStop = crash
	m.mu.Unlock()
	m.cancel()
	select {
	case <-m.done:
		if m.err != nil {
			t.Errorf("Start(%s) = %v, want nil", m.name, m.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Start(%s) did not return after its context ended", m.name)
	}
}

// loopbackBase picks a random 127.x.y.0 block per test binary so parallel
// runs of this package (or others using loopback) rarely share addresses;
// ports are dynamic anyway.
var loopbackBase = [3]byte{127, byte(rand.IntN(200) + 20), byte(rand.IntN(250) + 1)}

func startMember(t testing.TB, name string, host byte, secret string, peers ...netip.AddrPort) *member {
	t.Helper()
	cfg := Config{
		NodeName:  name,
		BindAddr:  netip.AddrFrom4([4]byte{loopbackBase[0], loopbackBase[1], loopbackBase[2], host}),
		SecretKey: []byte(secret),
	}
	for _, p := range peers {
		cfg.Peers = append(cfg.Peers, p.String())
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%v) = %v", cfg, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mem := &member{Members: m, name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		mem.err = m.Start(ctx)
		close(mem.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-mem.done
	})
	waitFor(t, 10*time.Second, func() bool { return slices.Contains(m.Alive(), name) },
		func() string { return name + " never saw itself alive" })
	return mem
}

func (m *member) addr(t testing.TB) netip.AddrPort {
	t.Helper()
	ap, ok := m.LocalAddr()
	if !ok {
		t.Fatalf("%s has no local address after start", m.name)
	}
	return ap
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, why())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitAlive(t testing.TB, timeout time.Duration, want []string, members ...*member) {
	t.Helper()
	for _, m := range members {
		waitFor(t, timeout, func() bool { return cmp.Equal(want, m.Alive()) }, func() string {
			return fmt.Sprintf("%s: Alive() mismatch (-want +got):\n%s", m.name, cmp.Diff(want, m.Alive()))
		})
	}
}

func TestJoinConverges(t *testing.T) {
	a := startMember(t, "node-a", 1, "s3cret")
	b := startMember(t, "node-b", 2, "s3cret", a.addr(t))
	c := startMember(t, "node-c", 3, "s3cret")
	// Join after start, as peer discovery does.
	if n, err := c.Join([]string{b.addr(t).String()}); err != nil || n != 1 {
		t.Fatalf("Join(%v) = %d, %v, want 1, nil", b.addr(t), n, err)
	}
	waitAlive(t, 10*time.Second, []string{"node-a", "node-b", "node-c"}, a, b, c)

	// Changes fired for the joins: drain and expect at least one.
	select {
	case <-a.Changes():
	default:
		t.Errorf("node-a: no change notification after two members joined")
	}
}

func TestJoinBeforeStart(t *testing.T) {
	a := startMember(t, "node-a", 4, "k")
	m, err := New(Config{NodeName: "node-b", BindAddr: netip.AddrFrom4([4]byte{loopbackBase[0], loopbackBase[1], loopbackBase[2], 5}), SecretKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Alive(); got != nil {
		t.Errorf("Alive() before Start = %v, want nil", got)
	}
	if n, err := m.Join([]string{a.addr(t).String()}); n != 0 || err != nil {
		t.Fatalf("Join before Start = %d, %v, want 0, nil (deferred)", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &member{Members: m, name: "node-b", cancel: cancel, done: make(chan struct{})}
	go func() {
		b.err = m.Start(ctx)
		close(b.done)
	}()
	t.Cleanup(func() { cancel(); <-b.done })
	waitAlive(t, 10*time.Second, []string{"node-a", "node-b"}, a, b)
	if err := m.Start(ctx); !errors.Is(err, ErrAlreadyStarted) {
		t.Errorf("second Start = %v, want ErrAlreadyStarted", err)
	}
}

func TestCleanLeaveSeenPromptly(t *testing.T) {
	a := startMember(t, "node-a", 6, "k")
	b := startMember(t, "node-b", 7, "k", a.addr(t))
	c := startMember(t, "node-c", 8, "k", a.addr(t))
	waitAlive(t, 10*time.Second, []string{"node-a", "node-b", "node-c"}, a, b, c)
	drain(a.Changes())

	start := time.Now()
	c.stop(t, false)
	// A leave message needs no failure detection: allow far less than the
	// time a crash takes to be declared dead under the same load.
	waitAlive(t, 5*time.Second, []string{"node-a", "node-b"}, a, b)
	t.Logf("clean leave seen by both survivors after %v", time.Since(start))
	select {
	case <-a.Changes():
	default:
		t.Errorf("node-a: no change notification after node-c left")
	}
}

func TestCrashDetected(t *testing.T) {
	a := startMember(t, "node-a", 9, "k")
	b := startMember(t, "node-b", 10, "k", a.addr(t))
	c := startMember(t, "node-c", 11, "k", a.addr(t))
	waitAlive(t, 10*time.Second, []string{"node-a", "node-b", "node-c"}, a, b, c)

	start := time.Now()
	c.stop(t, true)
	waitAlive(t, 15*time.Second, []string{"node-a", "node-b"}, a, b)
	t.Logf("crash detected by both survivors after %v", time.Since(start))
}

func TestWrongKeyCannotJoin(t *testing.T) {
	tests := []struct {
		name   string
		secret string
	}{
		{name: "different key", secret: "other"},
		{name: "no key", secret: ""},
	}
	a := startMember(t, "node-a", 12, "right")
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			intruder := startMember(t, "intruder", byte(13+i), tc.secret)
			if n, err := intruder.Join([]string{a.addr(t).String()}); err == nil || n != 0 {
				t.Errorf("Join with %s = %d, %v, want 0 and an error", tc.name, n, err)
			}
			if diff := cmp.Diff([]string{"node-a"}, a.Alive()); diff != "" {
				t.Errorf("node-a Alive() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"intruder"}, intruder.Alive()); diff != "" {
				t.Errorf("intruder Alive() mismatch (-want +got):\n%s", diff)
			}
			intruder.stop(t, false)
		})
	}
}

func TestNewRejects(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "no node name", cfg: Config{BindAddr: addr}},
		{name: "no address", cfg: Config{NodeName: "n"}},
		{name: "unspecified address", cfg: Config{NodeName: "n", BindAddr: netip.IPv4Unspecified()}},
		{name: "port out of range", cfg: Config{NodeName: "n", BindAddr: addr, Port: 70000}},
		{name: "probe timeout not below interval", cfg: Config{NodeName: "n", BindAddr: addr, ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New(%v) = %v, want ErrInvalidConfig", tc.cfg, err)
			}
		})
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	cfg := Config{NodeName: "n", BindAddr: netip.MustParseAddr("127.0.0.1"), SecretKey: []byte("hunter2-secret")}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, cfg); strings.Contains(out, "hunter2") || strings.Contains(out, "104 117 110") {
			t.Errorf("Sprintf(%q, cfg) = %q, shows the secret", verb, out)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	// The keys MetalLB's speakers use for the same Secret values (its
	// sha256.New().Sum(value)[:32]: the value, then SHA-256 of nothing,
	// cut to 32 bytes), so both gossip together during a migration.
	for _, tc := range []struct{ secret, want string }{
		{"metallb", "6d6574616c6c62e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca4"},
		{"0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "303132333435363738396162636465666768696a6b6c6d6e6f70717273747576"},
	} {
		if got := hex.EncodeToString(DeriveKey([]byte(tc.secret))); got != tc.want {
			t.Errorf("DeriveKey(%q) = %s, want %s", tc.secret, got, tc.want)
		}
	}
}

func TestLogAdapter(t *testing.T) {
	type entry struct {
		Verbosity int
		Message   string
		Detail    string
		IsError   bool
	}
	var (
		mu  sync.Mutex
		got []entry
	)
	sink := &recordSink{record: func(e recorded) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, entry{e.level, e.msg, e.detail, e.isErr})
	}}
	std := newStdLogger(logr.New(sink))
	std.Printf("[ERR] memberlist: Failed to send ping: boom")
	std.Printf("[WARN] memberlist: Was able to connect to x over TCP but UDP probes failed")
	std.Printf("[INFO] memberlist: Suspect node-c has failed, no acks received")
	std.Printf("[DEBUG] memberlist: Initiating push/pull sync with: x")
	want := []entry{
		{0, "memberlist reported an error", "Failed to send ping: boom", true},
		{0, "memberlist reported a warning", "Was able to connect to x over TCP but UDP probes failed", false},
		{1, "memberlist reported", "Suspect node-c has failed, no acks received", false},
		{2, "memberlist debug", "Initiating push/pull sync with: x", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("logged entries mismatch (-want +got):\n%s", diff)
	}
}

type recorded struct {
	level  int
	msg    string
	detail string
	isErr  bool
}

// recordSink is a minimal logr.LogSink that records each call.
type recordSink struct {
	record func(recorded)
	level  int
}

func (s *recordSink) Init(logr.RuntimeInfo) {}
func (s *recordSink) Enabled(int) bool      { return true }
func (s *recordSink) Info(level int, msg string, kv ...any) {
	s.record(recorded{level: s.level + level, msg: msg, detail: detail(kv)})
}
func (s *recordSink) Error(_ error, msg string, kv ...any) {
	s.record(recorded{msg: msg, detail: detail(kv), isErr: true})
}
func (s *recordSink) WithValues(...any) logr.LogSink { return s }
func (s *recordSink) WithName(string) logr.LogSink   { return s }

func detail(kv []any) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "detail" {
			return fmt.Sprint(kv[i+1])
		}
	}
	return ""
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// BenchmarkFailover measures, for a fresh three-member cluster per
// iteration, the time from one member stopping to both survivors' Alive()
// excluding it: "crash" shuts down without leaving (a killed process),
// "leave" is a clean stop. Reported as p50/max milliseconds; run with
// -benchtime=20x.
func BenchmarkFailover(b *testing.B) {
	for _, fault := range []string{"crash", "leave"} {
		b.Run("fault="+fault, func(b *testing.B) {
			var samples []time.Duration
			for i := 0; b.Loop(); i++ {
				host := byte(100 + 3*(i%40))
				a := startMember(b, "node-a", host, "k")
				m2 := startMember(b, "node-b", host+1, "k", a.addr(b))
				m3 := startMember(b, "node-c", host+2, "k", a.addr(b))
				waitAlive(b, 10*time.Second, []string{"node-a", "node-b", "node-c"}, a, m2, m3)
				start := time.Now()
				m3.stop(b, fault == "crash")
				waitAlive(b, 30*time.Second, []string{"node-a", "node-b"}, a, m2)
				samples = append(samples, time.Since(start))
				a.stop(b, false)
				m2.stop(b, false)
			}
			sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(samples[len(samples)/2]), "p50_ms")
			b.ReportMetric(ms(samples[len(samples)-1]), "max_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

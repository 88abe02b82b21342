package bgp

// Against real FRR: a router namespace running zebra and bgpd on a bridge,
// and one namespace per node running a speaker. A speaker is this test
// binary re-executed inside its namespace (a network namespace belongs to
// an OS thread, and the BGP server's goroutines move between threads).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/frr"
)

const (
	routerASN    = 64500
	nodeASN      = 64512
	helperEnv    = "IRONLB_BGP_SPEAKER_HELPER"
	frrTimeout   = 60 * time.Second
	labRouter    = "172.25.254.1"
	labRouterV6  = "fd00:254::1"
	labPrefixLen = 24
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(speakerHelper(cfg))
	}
	os.Exit(m.Run())
}

// speakerHelper runs one speaker peering with the lab router. cfg is
// "routerID,ipv6[,bfd=MS]"; with bfd both sessions run BFD (MS ms x 3). Each
// stdin line is the space-separated prefixes to advertise; "ok" is printed
// once applied. The line "?" prints the sessions' BFD states instead, as
// "name=state ...". EOF or SIGTERM stops cleanly.
func speakerHelper(cfg string) int {
	parts := strings.Split(cfg, ",")
	rid := netip.MustParseAddr(parts[0])
	v6 := netip.MustParseAddr(parts[1])
	var bfd BFDConfig
	if len(parts) > 2 {
		ms, _ := strconv.Atoi(strings.TrimPrefix(parts[2], "bfd="))
		iv := time.Duration(ms) * time.Millisecond
		bfd = BFDConfig{Enabled: true, ReceiveInterval: iv, TransmitInterval: iv, DetectMultiplier: 3}
	}
	s, err := New(Config{RouterID: rid, Logger: testLogger(nil)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	peers := []PeerConfig{
		{Name: "tor", Address: netip.MustParseAddr(labRouter), MyASN: nodeASN, PeerASN: routerASN, ConnectTime: time.Second, BFD: bfd},
		{Name: "tor6", Address: netip.MustParseAddr(labRouterV6), MyASN: nodeASN, PeerASN: routerASN, ConnectTime: time.Second, SourceAddress: v6, BFD: bfd},
	}
	if err := s.SyncPeers(ctx, peers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				cancel()
				continue
			}
			if line == "?" {
				sts, err := s.PeerStates(ctx)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				var out []string
				for _, st := range sts {
					out = append(out, st.Name+"="+st.BFDState)
				}
				fmt.Println(strings.Join(out, " "))
				continue
			}
			var paths []Path
			for _, f := range strings.Fields(line) {
				paths = append(paths, Path{Prefix: netip.MustParsePrefix(f)})
			}
			if err := s.SyncPaths(ctx, paths); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Println("ok")
		case err := <-done:
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			return 0
		}
	}
}

type lab struct {
	t      testing.TB
	suffix string
	router string // namespace
	frr    *frr.Router
	// bfdMs runs BFD on every session, bfdMs ms x 3 at both ends; 0 is
	// none.
	bfdMs uint32
}

func requireLab(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	frr.Require(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 not installed")
	}
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newLab creates the router namespace with a bridge and starts FRR there.
// Everything is removed in cleanup, also when the test fails.
func newLab(t testing.TB) *lab { return newLabBFD(t, 0) }

// newLabBFD is newLab, with BFD (bfdMs ms x 3) on every session unless
// bfdMs is 0.
func newLabBFD(t testing.TB, bfdMs uint32) *lab {
	t.Helper()
	l := &lab{t: t, suffix: strconv.Itoa(os.Getpid() % 100000), bfdMs: bfdMs}
	if bfdMs != 0 {
		// Apart from the other labs of the same process, whose namespaces
		// the kernel may still be removing.
		l.suffix += "b" + strconv.Itoa(int(bfdMs))
	}
	l.router = "ilb-r-" + l.suffix
	run(t, "ip", "netns", "add", l.router)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.router).Run() })
	ns := func(args ...string) { run(t, append([]string{"ip", "netns", "exec", l.router}, args...)...) }
	ns("ip", "link", "set", "lo", "up")
	ns("ip", "link", "add", "br0", "type", "bridge")
	ns("ip", "addr", "add", labRouter+"/24", "dev", "br0")
	ns("ip", "addr", "add", labRouterV6+"/64", "dev", "br0", "nodad")
	ns("ip", "link", "set", "br0", "up")
	// A port that never goes down keeps the bridge's carrier, so a node's
	// cable cut is not also the router losing its connected route (which
	// would withdraw the node's routes at once, BFD or not): the cut is
	// between the switch and the node, as in a rack.
	ns("ip", "link", "add", "keep0", "type", "veth", "peer", "name", "keep1")
	ns("ip", "link", "set", "keep1", "up")
	ns("ip", "link", "set", "keep0", "master", "br0", "up")

	// IPv4 unicast on every session, the IPv6 ones too: FRR's default.
	cfg := frr.Config{ASN: routerASN, NodeASN: nodeASN, RouterID: netip.MustParseAddr(labRouter), IPv4OnAll: true}
	for _, n := range []string{"172.25.254.11", "172.25.254.12", "fd00:254::11", "fd00:254::12"} {
		cfg.Neighbours = append(cfg.Neighbours, netip.MustParseAddr(n))
	}
	if bfdMs != 0 {
		cfg.BFD = &frr.BFD{ReceiveMs: bfdMs, TransmitMs: bfdMs, Multiplier: 3}
	}
	l.frr = frr.Start(t, l.router, cfg.BGPD(), cfg.BFDD())
	return l
}

// nextHops reads the router's RIB (zebra) for one prefix.
func (l *lab) nextHops(pfx netip.Prefix) ([]string, error) { return l.frr.NextHops(pfx) }

// node is a speaker process in its own namespace on the lab bridge.
type node struct {
	// link is the node's end of its cable, in the router's namespace.
	link  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	done  chan error
}

func (l *lab) addNode(idx int) *node {
	t := l.t
	name := fmt.Sprintf("ilb-n%d-%s", idx, l.suffix)
	host := fmt.Sprintf("ilbv%d-%s", idx, l.suffix)
	v4 := fmt.Sprintf("172.25.254.%d", 10+idx)
	v6 := fmt.Sprintf("fd00:254::%d", 10+idx)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "link", "add", host, "netns", l.router, "type", "veth", "peer", "name", "eth0", "netns", name)
	in := func(ns string, args ...string) { run(t, append([]string{"ip", "netns", "exec", ns}, args...)...) }
	in(l.router, "ip", "link", "set", host, "master", "br0", "up")
	in(name, "ip", "link", "set", "lo", "up")
	in(name, "ip", "addr", "add", v4+"/24", "dev", "eth0")
	in(name, "ip", "addr", "add", v6+"/64", "dev", "eth0", "nodad")
	in(name, "ip", "link", "set", "eth0", "up")

	cmd := exec.Command("ip", "netns", "exec", name, os.Args[0], "-test.run=^$")
	helperCfg := v4 + "," + v6
	if l.bfdMs != 0 {
		helperCfg += ",bfd=" + strconv.Itoa(int(l.bfdMs))
	}
	cmd.Env = append(os.Environ(), helperEnv+"="+helperCfg)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start speaker in %s: %v", name, err)
	}
	n := &node{link: host, cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), done: make(chan error, 1)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-n.done
	})
	go func() { n.done <- cmd.Wait() }()
	return n
}

func (n *node) advertise(t testing.TB, prefixes ...netip.Prefix) {
	t.Helper()
	var fields []string
	for _, p := range prefixes {
		fields = append(fields, p.String())
	}
	if _, err := fmt.Fprintln(n.stdin, strings.Join(fields, " ")); err != nil {
		t.Fatalf("send paths to speaker: %v", err)
	}
	if !n.out.Scan() || n.out.Text() != "ok" {
		t.Fatalf("speaker did not apply paths: %q %v", n.out.Text(), n.out.Err())
	}
}

// bfdStates asks the speaker for its sessions' BFD states, by peer name.
func (n *node) bfdStates(t testing.TB) map[string]string {
	t.Helper()
	if _, err := fmt.Fprintln(n.stdin, "?"); err != nil {
		t.Fatalf("ask speaker for BFD states: %v", err)
	}
	if !n.out.Scan() {
		t.Fatalf("speaker did not answer with BFD states: %v", n.out.Err())
	}
	out := map[string]string{}
	for _, f := range strings.Fields(n.out.Text()) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

// stop ends the speaker cleanly (EOF on stdin) and waits for it.
func (n *node) stop(t testing.TB) {
	t.Helper()
	n.stdin.Close()
	select {
	case err := <-n.done:
		n.done <- err // for cleanup
		if err != nil {
			t.Fatalf("speaker exited with %v", err)
		}
	case <-time.After(frrTimeout):
		t.Fatalf("speaker did not stop within %v", frrTimeout)
	}
}

func (l *lab) wantNextHops(t *testing.T, pfx netip.Prefix, want []string) {
	t.Helper()
	eventually(t, frrTimeout, fmt.Sprintf("next hops of %v at FRR", pfx), func() string {
		got, err := l.nextHops(pfx)
		if err != nil {
			return err.Error()
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("next hops %v, want %v", got, want)
		}
		return ""
	})
}

func TestFRRECMPAndWithdraw(t *testing.T) {
	requireLab(t)
	l := newLab(t)
	n1, n2 := l.addNode(1), l.addNode(2)
	vip := netip.MustParsePrefix("172.25.254.50/32")
	vip6 := netip.MustParsePrefix("fd00:254::50/128")
	n1.advertise(t, vip, vip6)
	n2.advertise(t, vip, vip6)
	l.wantNextHops(t, vip, []string{"172.25.254.11", "172.25.254.12"})
	l.wantNextHops(t, vip6, []string{"fd00:254::11", "fd00:254::12"})

	// Level-triggered withdrawal from one node leaves the other.
	n1.advertise(t)
	l.wantNextHops(t, vip, []string{"172.25.254.12"})
	l.wantNextHops(t, vip6, []string{"fd00:254::12"})

	// A clean stop withdraws at once, well before any hold timer.
	start := time.Now()
	n2.stop(t)
	l.wantNextHops(t, vip, nil)
	l.wantNextHops(t, vip6, nil)
	t.Logf("bgp-clean-stop-withdraw ms=%.0f (Start's context cancelled to no next hop at FRR)", float64(time.Since(start).Microseconds())/1000)
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("withdrawal on clean stop took %v, want well under the 90s hold time", d)
	}
}

// TestFRRBFD: BFD sessions come up with FRR's bfdd at both ends and the
// speaker reports them; when the node's link is cut, FRR's bfdd finds the
// node gone and bgpd drops its routes long before the 90 s hold time.
func TestFRRBFD(t *testing.T) {
	requireLab(t)
	l := newLabBFD(t, 100)
	n := l.addNode(1)
	vip := netip.MustParsePrefix("172.25.254.50/32")
	n.advertise(t, vip)
	l.wantNextHops(t, vip, []string{"172.25.254.11"})
	eventually(t, frrTimeout, "BFD up at FRR and at the speaker", func() string {
		peers, err := l.frr.BFDPeers()
		if err != nil {
			return err.Error()
		}
		if peers["172.25.254.11"] != "up" || peers["fd00:254::11"] != "up" {
			return fmt.Sprintf("FRR's BFD peers %v, want 172.25.254.11 and fd00:254::11 up", peers)
		}
		if got := n.bfdStates(t); got["tor"] != "up" || got["tor6"] != "up" {
			return fmt.Sprintf("speaker's BFD states %v, want tor and tor6 up", got)
		}
		return ""
	})

	start := time.Now()
	run(t, "ip", "netns", "exec", l.router, "ip", "link", "set", n.link, "down")
	l.wantNextHops(t, vip, nil)
	took := time.Since(start)
	t.Logf("link cut to no next hop at FRR with BFD 100 ms x 3: %v", took)
	// The hold timer alone would take 90 s; BFD takes 300 ms and FRR a
	// moment to act on it. The bound is loose for a busy machine.
	if took > 10*time.Second {
		t.Errorf("route kept %v after the link was cut, want BFD (100 ms x 3) to remove it within 10s", took)
	}
	eventually(t, frrTimeout, "speaker reports BFD down", func() string {
		if got := n.bfdStates(t); got["tor"] == "up" {
			return fmt.Sprintf("speaker's BFD states %v, want tor not up", got)
		}
		return ""
	})
}

// BenchmarkFRRAnnounce measures a speaker's SyncPaths until FRR has put the
// route in the router namespace's kernel table (seen by `ip monitor`), and
// removal until the kernel route is deleted.
func BenchmarkFRRAnnounce(b *testing.B) {
	requireLab(b)
	l := newLab(b)
	n := l.addNode(1)
	mon := exec.Command("ip", "netns", "exec", l.router, "ip", "-4", "monitor", "route")
	out, err := mon.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := mon.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = mon.Process.Kill(); _ = mon.Wait() })
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	await := func(pfx netip.Prefix, deleted bool) {
		timeout := time.After(frrTimeout)
		for {
			select {
			case line := <-lines:
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				isDel := f[0] == "Deleted"
				if isDel {
					f = f[1:]
				}
				if isDel == deleted && len(f) > 0 && (f[0] == pfx.Addr().String() || f[0] == pfx.String()) {
					return
				}
			case <-timeout:
				b.Fatalf("kernel route %v (deleted=%v) not seen within %v", pfx, deleted, frrTimeout)
			}
		}
	}
	// The first route also waits for the session; keep it out of the figures.
	warm := netip.MustParsePrefix("198.18.255.1/32")
	n.advertise(b, warm)
	await(warm, false)
	n.advertise(b)
	await(warm, true)

	var announce, withdraw []time.Duration
	base := netip.MustParseAddr("198.18.0.1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pfx := netip.PrefixFrom(base, 32)
		base = base.Next()
		t0 := time.Now()
		n.advertise(b, pfx)
		await(pfx, false)
		announce = append(announce, time.Since(t0))
		t0 = time.Now()
		n.advertise(b)
		await(pfx, true)
		withdraw = append(withdraw, time.Since(t0))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"_p50_ms")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, name+"_p99_ms")
	}
	report("announce", announce)
	report("withdraw", withdraw)
}

// TestFRRFailoverBench is the failover benchmark (make bench-bgp-failover):
// a node advertising an address fails one of three ways, with BFD (the
// default profile, 300 ms x 3, and a fast one, 50 ms x 3, at both ends) and
// without, and the time until the router's kernel table no longer has the
// node as next hop is measured. It prints one line per fault and profile:
//
//	bgp-failover fault=kill|linkcut|stop bfd=on|off profile=... n=N p50_ms=... p99_ms=...
//
// Without BFD a cut link is found by the hold timer only (90 s), so that
// case runs IRONLB_BGP_FAILOVER_SLOW_TRIALS times (default 1).
func TestFRRFailoverBench(t *testing.T) {
	trials, _ := strconv.Atoi(os.Getenv("IRONLB_BGP_FAILOVER_TRIALS"))
	if trials <= 0 {
		t.Skip("a benchmark: set IRONLB_BGP_FAILOVER_TRIALS (make bench-bgp-failover)")
	}
	slow, _ := strconv.Atoi(os.Getenv("IRONLB_BGP_FAILOVER_SLOW_TRIALS"))
	slow = max(slow, 1)
	requireLab(t)
	for _, ms := range []uint32{300, 50, 0} {
		t.Run(fmt.Sprintf("bfd=%dms", ms), func(t *testing.T) { failoverTrials(t, ms, trials, slow) })
	}
}

func failoverTrials(t *testing.T, bfdMs uint32, trials, slow int) {
	vip := netip.MustParsePrefix("172.25.254.50/32")
	l := newLabBFD(t, bfdMs)
	label := fmt.Sprintf("bfd=on profile=%dmsx3", bfdMs)
	if bfdMs == 0 {
		label = "bfd=off profile=hold90s"
	}
	for _, fault := range []string{"kill", "linkcut", "stop"} {
		n := trials
		if fault == "linkcut" && bfdMs == 0 {
			n = slow
		}
		var took []time.Duration
		for range n {
			node := l.addNode(1)
			node.advertise(t, vip)
			l.wantKernelRoute(t, vip, true)
			if bfdMs != 0 {
				eventually(t, frrTimeout, "BFD up", func() string {
					if peers, err := l.frr.BFDPeers(); err != nil || peers["172.25.254.11"] != "up" {
						return fmt.Sprintf("FRR's BFD peers %v %v", peers, err)
					}
					return ""
				})
			}
			start := time.Now()
			switch fault {
			case "kill":
				_ = node.cmd.Process.Kill()
			case "linkcut":
				run(t, "ip", "netns", "exec", l.router, "ip", "link", "set", node.link, "down")
			case "stop":
				node.stdin.Close()
			}
			l.wantKernelRoute(t, vip, false)
			took = append(took, time.Since(start))
			l.removeNode(t, node, 1)
		}
		slices.Sort(took)
		fmt.Printf("bgp-failover fault=%s %s n=%d p50_ms=%.0f p99_ms=%.0f\n", fault, label, len(took),
			float64(took[len(took)/2].Microseconds())/1000, float64(took[(len(took)*99)/100].Microseconds())/1000)
	}
}

// wantKernelRoute polls the router's kernel table until the route to pfx is
// there (present) or gone; the poll interval is the measurement's grain.
func (l *lab) wantKernelRoute(t *testing.T, pfx netip.Prefix, present bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // beyond the 90 s hold time
	for {
		out := run(t, "ip", "-n", l.router, "route", "show", pfx.String())
		if (strings.TrimSpace(out) != "") == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel route %v present=%v not reached: %q", pfx, present, out)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// removeNode ends the node's speaker and deletes its namespace, so the
// next trial can create it again.
func (l *lab) removeNode(t *testing.T, n *node, idx int) {
	t.Helper()
	_ = n.cmd.Process.Kill()
	err := <-n.done
	n.done <- err // for the cleanup registered by addNode
	// The cable first: deleting the namespace removes it only later.
	run(t, "ip", "-n", l.router, "link", "del", n.link)
	run(t, "ip", "netns", "del", fmt.Sprintf("ilb-n%d-%s", idx, l.suffix))
}

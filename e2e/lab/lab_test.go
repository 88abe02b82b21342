package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/ironlb/ironlb/e2e/lab"
)

// backendPath is the e2e/backend program built once for the tests.
var backendPath string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "ilb-lab-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			backendPath = filepath.Join(dir, "backend")
			out, err := exec.Command("go", "build", "-o", backendPath, "github.com/ironlb/ironlb/e2e/backend").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build backend: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// reach proves a TCP connection from one host to an address works, polling
// because a fresh link may still be settling on a loaded machine.
func reach(t *testing.T, from, to *lab.Host, addr netip.Addr) {
	t.Helper()
	ln, err := to.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, to.Name+"\n")
			c.Close()
		}
	}()
	target := ln.Addr().String()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := from.Dial(ctx, "tcp", target)
			if err != nil {
				return "", err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			return bufio.NewReader(c).ReadString('\n')
		}()
		if err == nil {
			if got != to.Name+"\n" {
				t.Fatalf("%s -> %s (%s): answer %q, want %q", from.Name, to.Name, target, got, to.Name+"\n")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -> %s (%s): %v", from.Name, to.Name, target, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func routes(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}, {"rule"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// leftovers lists namespaces and root-namespace links named with prefix.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	var found []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			found = append(found, "netns "+e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			found = append(found, "link "+l.Attrs().Name)
		}
	}
	return found
}

func TestHostsReachEachOther(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	n1, n2, n3 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	tests := []struct {
		name     string
		from, to *lab.Host
		addr     netip.Addr
	}{
		{"client to router", l.Client, l.Router, l.Router.IPv4},
		{"client to node1", l.Client, n1.Host, n1.IPv4},
		{"client to node3 over IPv6", l.Client, n3.Host, n3.IPv6},
		{"node1 to node2", n1.Host, n2.Host, n2.IPv4},
		{"node2 to host", n2.Host, l.Host, l.Host.IPv4},
		{"host to node3", l.Host, n3.Host, n3.IPv4},
		{"node3 to host over IPv6", n3.Host, l.Host, l.Host.IPv6},
		{"router to client over IPv6", l.Router, l.Client, l.Client.IPv6},
		{"node1 to its pod", n1.Host, n1.Pod, n1.Pod.IPv4},
		{"node1 to pod2 across nodes", n1.Host, n2.Pod, n2.Pod.IPv4},
		{"pod1 to pod3 across nodes", n1.Pod, n3.Pod, n3.Pod.IPv4},
		{"pod3 to node2", n3.Pod, n2.Host, n2.IPv4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reach(t, tc.from, tc.to, tc.addr)
		})
	}
}

func TestNoWayOutOfTheLab(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{Nodes: 2})
	ctx := context.Background()
	// Default routes lead only to the router (or, for pods, their node),
	// and the router has no default route: nothing can leave the lab.
	gateways := map[string]bool{"via " + l.Router.IPv4.String(): true, "via " + l.Router.IPv6.String(): true}
	for _, n := range l.Nodes {
		gateways["via "+n.Gateway.String()] = true
	}
	for _, h := range l.Hosts()[1:] {
		for _, family := range []string{"-4", "-6"} {
			out, err := h.Exec(ctx, "ip", family, "route", "show", "table", "all")
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.Lines(out) {
				if !strings.HasPrefix(line, "default") {
					continue
				}
				f := strings.Fields(line)
				if h == l.Router || len(f) < 3 || !gateways[f[1]+" "+f[2]] {
					t.Errorf("%s: default route out of the lab: %s", h.Name, strings.TrimSpace(line))
				}
			}
		}
	}
	// An address outside every lab network has no route at the router.
	if out, err := l.Router.Exec(ctx, "ip", "route", "get", "203.0.113.1"); err == nil {
		t.Errorf("router has a route to 203.0.113.1: %s", out)
	}
}

func TestRootRoutesUnchanged(t *testing.T) {
	lab.RequireRoot(t)
	// All three snapshots under the host lock: another package's lab
	// coming or going in between would change the root routes too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	hostLock, err := lab.LockHost(ctx, func() { t.Log("waiting for another lab to release the host address") })
	if err != nil {
		t.Fatal(err)
	}
	defer hostLock.Release()
	// New sweeps what dead runs left; do it first so it does not count.
	if err := lab.SweepStale(); err != nil {
		t.Fatal(err)
	}
	before := routes(t)
	l, err := lab.New(ctx, lab.Config{HostLock: hostLock})
	if err != nil {
		t.Fatal(err)
	}
	during := routes(t)
	closeErr := l.Close()
	after := routes(t)
	hostLock.Release()
	if closeErr != nil {
		t.Fatalf("Close: %v", closeErr)
	}
	// While up, the only new routes are the host port's connected ones.
	var added []string
	for line := range strings.Lines(during) {
		if !strings.Contains(before, line) && !strings.Contains(line, "dev "+l.Host.Iface+" ") {
			added = append(added, line)
		}
	}
	if len(added) > 0 {
		t.Errorf("routes added in the root namespace beyond %s's own: %q", l.Host.Iface, added)
	}
	if !strings.Contains(during, "172.25.254.0/24 dev "+l.Host.Iface) {
		t.Errorf("no connected route for the lab segment on %s:\n%s", l.Host.Iface, during)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("root namespace routes changed after Close (-before +after):\n%s", diff)
	}
}

func TestBackendsAnswerWithTheirName(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{Backend: backendPath})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	tests := []struct {
		name    string
		from    *lab.Host
		network string
		to      netip.AddrPort
		send    string
		want    string
	}{
		{"tcp from node1 to pod2", n1.Host, "tcp", netip.AddrPortFrom(n2.Pod.IPv4, 9000), "", "pod2 172.25.254.11"},
		{"udp from node2 to pod1", n2.Host, "udp", netip.AddrPortFrom(n1.Pod.IPv4, 9000), "hello", "pod1 172.25.254.12"},
		{"http from pod1 to pod2", n1.Pod, "http", netip.AddrPortFrom(n2.Pod.IPv4, 80), "", "pod2 10.244.1.10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			deadline := time.Now().Add(30 * time.Second)
			for {
				got, err := ask(tc.from, tc.network, tc.to, tc.send)
				if err == nil {
					// The client port varies; the address must be the sender's.
					if !strings.HasPrefix(got, tc.want+":") {
						t.Fatalf("answer %q, want %q:<port>", got, tc.want)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s %s: %v\n%s", tc.network, tc.to, err, l.Logs())
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

func ask(from *lab.Host, network string, to netip.AddrPort, send string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if network == "http" {
		out, err := from.Exec(ctx, "curl", "-sS", "--max-time", "2", "http://"+to.String()+"/")
		return strings.TrimSpace(out), err
	}
	c, err := from.Dial(ctx, network, to.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			return "", err
		}
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func TestCloseLeavesNothing(t *testing.T) {
	lab.RequireRoot(t)
	l, err := lab.New(context.Background(), lab.Config{Backend: backendPath})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range l.Processes() {
		pids = append(pids, p.Pid())
	}
	if len(pids) != 3 {
		t.Errorf("backends started = %d, want 3", len(pids))
	}
	if got := leftovers(t, l.Prefix); len(got) == 0 {
		t.Fatalf("lab %s made no namespaces or links", l.Prefix)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if diff := cmp.Diff([]string(nil), leftovers(t, l.Prefix)); diff != "" {
		t.Errorf("left after Close (-want +got):\n%s", diff)
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("backend pid %d still exists after Close", pid)
		}
	}
}

func TestSweepStaleRemovesDeadRuns(t *testing.T) {
	lab.RequireRoot(t)
	// A process that has exited gives a pid that is surely dead.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("ilb%da-", cmd.Process.Pid)
	out, err := exec.Command("ip", "link", "add", dead+"lab", "type", "veth", "peer", "name", dead+"peer").CombinedOutput()
	if err != nil {
		t.Fatalf("make leftover link: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "add", dead+"node1").CombinedOutput(); err != nil {
		t.Fatalf("make leftover namespace: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = lab.Sweep(dead) })
	alive := lab.NewForTest(t, lab.Config{Nodes: 1})

	if err := lab.SweepStale(); err != nil {
		t.Fatalf("SweepStale: %v", err)
	}
	if diff := cmp.Diff([]string(nil), leftovers(t, dead)); diff != "" {
		t.Errorf("leftovers of dead run (-want +got):\n%s", diff)
	}
	if len(leftovers(t, alive.Prefix)) == 0 {
		t.Errorf("SweepStale removed the live lab %s", alive.Prefix)
	}
}

func BenchmarkLabUp(b *testing.B) {
	lab.RequireRoot(b)
	for _, nodes := range []int{3, 10} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			var up time.Duration
			for b.Loop() {
				l, err := lab.New(context.Background(), lab.Config{Nodes: nodes})
				if err != nil {
					b.Fatal(err)
				}
				up += l.BringUp
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(up.Milliseconds())/float64(b.N), "ms-up/op")
		})
	}
}

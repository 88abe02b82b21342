package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/election"
)

// startSpeaker runs `ironlb speaker` in a node's namespace, as the DaemonSet
// would run it on the node's host network.
func startSpeaker(t *testing.T, kubeconfig string, n *lab.Node) *lab.Process {
	t.Helper()
	p, err := n.StartProcess(lab.ProcessSpec{
		Label: "speaker",
		Path:  ironlbPath,
		Args: []string{"speaker",
			"--node-name", n.Name,
			"--kubeconfig", kubeconfig,
			"--metrics-bind-address=0",
			"--health-probe-bind-address=0",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("===== %s log =====\n%s", p, p.Log())
		}
	})
	return p
}

// inNetns runs fn on a thread in the named network namespace; sockets
// opened by fn stay in that namespace. The thread goes back to its own
// namespace afterwards rather than exiting: lab processes die with the
// thread that started them (Pdeathsig), and that may be this one.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current namespace: %w", err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Stuck in the wrong namespace: the thread must not be reused.
		return errors.Join(fnErr, fmt.Errorf("leave namespace %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// arpClient sends ARP requests from a host, as arping does.
func arpClient(t *testing.T, h *lab.Host) *arp.Client {
	t.Helper()
	var c *arp.Client
	err := inNetns(h.Namespace, func() error {
		ifi, err := net.InterfaceByName(h.Iface)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("arp client on %s: %v", h.Name, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// arping asks who has addr and returns the distinct hardware addresses that
// answer within wait, sorted.
func arping(c *arp.Client, addr netip.Addr, wait time.Duration) ([]string, error) {
	if err := c.Request(addr); err != nil {
		return nil, fmt.Errorf("send ARP request for %s: %w", addr, err)
	}
	deadline := time.Now().Add(wait)
	var macs []string
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		p, _, err := c.Read()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			slices.Sort(macs)
			return macs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read ARP: %w", err)
		}
		if p.Operation == arp.OperationReply && p.SenderIP == addr && !slices.Contains(macs, p.SenderHardwareAddr.String()) {
			macs = append(macs, p.SenderHardwareAddr.String())
		}
	}
}

// neighbours reads a host's neighbour table through netlink.
type neighbours struct {
	h     *netlink.Handle
	index int
}

func openNeighbours(t *testing.T, host *lab.Host) *neighbours {
	t.Helper()
	ns, err := netns.GetFromName(host.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink in %s: %v", host.Name, err)
	}
	t.Cleanup(h.Close)
	link, err := h.LinkByName(host.Iface)
	if err != nil {
		t.Fatalf("%s: link %s: %v", host.Name, host.Iface, err)
	}
	return &neighbours{h: h, index: link.Attrs().Index}
}

// mac is the hardware address of addr's entry, "" when there is none or it
// is not resolved.
func (n *neighbours) mac(addr netip.Addr) (string, error) {
	entries, err := n.h.NeighList(n.index, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if a, ok := netip.AddrFromSlice(e.IP); ok && a.Unmap() == addr && len(e.HardwareAddr) > 0 &&
			e.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return e.HardwareAddr.String(), nil
		}
	}
	return "", nil
}

func hardwareAddr(t *testing.T, host *lab.Host) string {
	t.Helper()
	ns, err := netns.GetFromName(host.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link, err := h.LinkByName(host.Iface)
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().HardwareAddr.String()
}

// l2Owners are the nodes named by ServiceL2Status objects of a Service, as
// `kubectl get servicel2statuses -A` shows them.
func l2Owners(c *labCluster, service string) ([]string, string, error) {
	out, err := c.env.Kubectl("get", "servicel2statuses", "-A", "-l", "metallb.io/service-name="+service,
		"-o", "jsonpath={range .items[*]}{.status.node}{\"\\n\"}{end}")
	if err != nil {
		return nil, out, err
	}
	nodes := strings.Fields(out)
	slices.Sort(nodes)
	table, _ := c.env.Kubectl("get", "servicel2statuses", "-A")
	return nodes, table, nil
}

// TestLabL2SpeakerFailover: with a speaker on every node, exactly one node,
// the election winner, answers ARP for the Service's address and reports
// itself in ServiceL2Status; when its speaker is killed (SIGKILL) or stopped
// cleanly (SIGTERM), the next election winner takes over, the client's
// neighbour entry follows through gratuitous ARP, and when the node comes
// back it takes its address back. The outage (signal to the client's entry
// pointing at the new owner) is logged per trial; IRONLB_FAILOVER_TRIALS
// sets the number of trials per fault (default 3).
func TestLabL2SpeakerFailover(t *testing.T) {
	c := startLabCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	err := c.env.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: "memberlist"},
		Data:       map[string][]byte{"secretkey": key},
	})
	if err != nil {
		t.Fatalf("create memberlist secret: %v", err)
	}
	c.kubectl(t, "apply", "-f", examplePath(t, "01-l2-first-pool.yaml"))
	c.deployExampleService(t)

	kubeconfig := c.env.Kubeconfig // the API server listens on the host's lab address
	speakers := map[string]*lab.Process{}
	macs := map[string]string{}
	var names []string
	for _, n := range c.Nodes {
		speakers[n.Name] = startSpeaker(t, kubeconfig, n)
		macs[n.Name] = hardwareAddr(t, n.Host)
		names = append(names, n.Name)
	}
	nodeOf := func(mac string) string {
		for n, m := range macs {
			if m == mac {
				return n
			}
		}
		return "unknown MAC " + mac
	}

	vip := netip.MustParseAddr("172.25.254.50")
	arpc := arpClient(t, c.Client)
	neigh := openNeighbours(t, c.Client)

	// waitSoleOwner waits until exactly want answers ARP and is the only
	// node in ServiceL2Status.
	waitSoleOwner := func(want string) {
		t.Helper()
		out, ok := waitFor(time.Minute, func() (string, bool) {
			got, err := arping(arpc, vip, 300*time.Millisecond)
			if err != nil {
				return err.Error(), false
			}
			owners, table, err := l2Owners(c, "dhj-service")
			if err != nil {
				return err.Error(), false
			}
			answering := make([]string, 0, len(got))
			for _, m := range got {
				answering = append(answering, nodeOf(m))
			}
			msg := fmt.Sprintf("ARP answered by %v; ServiceL2Status nodes %v\n%s", answering, owners, table)
			return msg, slices.Equal(answering, []string{want}) && slices.Equal(owners, []string{want})
		})
		if !ok {
			t.Fatalf("want %s as the only owner of %s: %s", want, vip, out)
		}
		t.Logf("%s owns %s:\n%s", want, vip, out)
	}

	owner, _ := election.Winner(vip, names)
	waitSoleOwner(owner)

	trials := 3
	if s := os.Getenv("IRONLB_FAILOVER_TRIALS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			trials = n
		}
	}
	for _, fault := range []string{"kill", "stop"} {
		var outages []time.Duration
		for trial := 1; trial <= trials; trial++ {
			// The client talks to the address once, so its neighbour
			// entry points at the owner, as any client's would.
			conn, err := c.Client.Dial(ctx, "udp", netip.AddrPortFrom(vip, 9).String())
			if err != nil {
				t.Fatal(err)
			}
			_, _ = conn.Write([]byte("hello"))
			_ = conn.Close()
			if out, ok := waitFor(30*time.Second, func() (string, bool) {
				m, err := neigh.mac(vip)
				return fmt.Sprintf("client's neighbour entry for %s: %q (%v), want %s", vip, m, err, macs[owner]), m == macs[owner]
			}); !ok {
				t.Fatal(out)
			}

			next := nextOwner(vip, names, owner)

			start := time.Now()
			switch fault {
			case "kill":
				speakers[owner].Kill()
			case "stop":
				// A clean stop (SIGTERM) leaves memberlist first.
				go func(p *lab.Process) { _ = p.Stop(10 * time.Second) }(speakers[owner])
			}
			var outage time.Duration
			for {
				m, err := neigh.mac(vip)
				if err != nil {
					t.Fatal(err)
				}
				if m != "" && m != macs[owner] {
					outage = time.Since(start)
					if got := nodeOf(m); got != next {
						t.Errorf("%s trial %d: client's entry moved to %s, want %s (the election winner without %s)", fault, trial, got, next, owner)
					}
					break
				}
				if time.Since(start) > time.Minute {
					t.Fatalf("%s trial %d: client's neighbour entry still points at %s a minute after its speaker was stopped", fault, trial, owner)
				}
				time.Sleep(time.Millisecond)
			}
			outages = append(outages, outage)
			t.Logf("%s trial %d: stopped the speaker of %s; the client's neighbour entry pointed at %s after %v", fault, trial, owner, next, outage)
			<-speakers[owner].Done()
			waitSoleOwner(next)

			// The node comes back; rendezvous hashing gives it its
			// address again, and only that one.
			speakers[owner] = startSpeaker(t, kubeconfig, c.Node(owner))
			waitSoleOwner(owner)
		}
		slices.Sort(outages)
		// p99 of n trials is the (ceil(0.99 n))-th smallest: the maximum
		// below 100 trials.
		p99 := outages[(len(outages)*99+99)/100-1]
		t.Logf("l2-failover fault=%s n=%d p50_ms=%.1f p99_ms=%.1f min_ms=%.1f max_ms=%.1f", fault, len(outages),
			ms(outages[len(outages)/2]), ms(p99), ms(outages[0]), ms(outages[len(outages)-1]))
	}
}

// nextOwner is who the election picks for vip once owner is gone.
func nextOwner(vip netip.Addr, names []string, owner string) string {
	survivors := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == owner })
	next, _ := election.Winner(vip, survivors)
	return next
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

package e2e

import (
	"context"
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/election"
)

// startSpeaker runs `ironlb speaker` in a node's namespace, as the DaemonSet
// would run it on the node's host network, with extra flags if given.
func startSpeaker(t *testing.T, kubeconfig string, n *lab.Node, extra ...string) *lab.Process {
	t.Helper()
	p, err := n.StartProcess(lab.ProcessSpec{
		Label: "speaker",
		Path:  ironlbPath,
		Args: append([]string{"speaker",
			"--node-name", n.Name,
			"--kubeconfig", kubeconfig,
			"--metrics-bind-address=0",
			"--health-probe-bind-address=0",
		}, extra...),
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
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	entries, err := n.h.NeighList(n.index, family)
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

// waitMemberlistSecret waits for the memberlist Secret that ironlb's
// controller creates at start, with a key of at least the 32 bytes the
// speakers use (they refuse to gossip unencrypted).
func (c *labCluster) waitMemberlistSecret(t *testing.T) {
	t.Helper()
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		var s corev1.Secret
		err := c.env.Client.Get(context.Background(), client.ObjectKey{Namespace: cluster.Namespace, Name: "memberlist"}, &s)
		key := s.Data["secretkey"]
		return fmt.Sprintf("secret %s/memberlist: %v, %d bytes of secretkey", cluster.Namespace, err, len(key)), err == nil && len(key) >= 32
	}); !ok {
		t.Fatalf("the controller did not create the memberlist secret: %s\n%s", out, c.controller.Log())
	}
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
// back it takes its address back. The same holds when the owner's link goes
// down (its bridge port, a cable pull): once the link is back the cluster
// merges and the owner re-announces, so the client's entry returns to it
// without the client asking. The outage (fault to the client's entry
// pointing at the new owner) is logged per trial; IRONLB_FAILOVER_TRIALS
// sets the number of trials per fault (default 3), IRONLB_FAILOVER_FAULTS
// the faults (default kill,stop,linkdown).
func TestLabL2SpeakerFailover(t *testing.T) {
	c := startLabCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	c.waitMemberlistSecret(t)
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

	// waitAnsweredBy waits until exactly want answers ARP.
	waitAnsweredBy := func(want string) {
		t.Helper()
		out, ok := waitFor(time.Minute, func() (string, bool) {
			got, err := arping(arpc, vip, 300*time.Millisecond)
			if err != nil {
				return err.Error(), false
			}
			answering := make([]string, 0, len(got))
			for _, m := range got {
				answering = append(answering, nodeOf(m))
			}
			return fmt.Sprintf("ARP answered by %v", answering), slices.Equal(answering, []string{want})
		})
		if !ok {
			t.Fatalf("want %s as the only node answering ARP for %s: %s", want, vip, out)
		}
	}

	owner, _ := election.Winner(vip, names)
	waitSoleOwner(owner)

	trials := 3
	if s := os.Getenv("IRONLB_FAILOVER_TRIALS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			trials = n
		}
	}
	faults := []string{"kill", "stop", "linkdown"}
	if s := os.Getenv("IRONLB_FAILOVER_FAULTS"); s != "" {
		faults = strings.Split(s, ",")
	}
	for _, fault := range faults {
		var outages, served []time.Duration
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
			case "linkdown":
				c.setPort(t, owner, false)
			default:
				t.Fatalf("unknown fault %q (want kill, stop or linkdown)", fault)
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
			t.Logf("%s trial %d: %s failed; the client's neighbour entry pointed at %s after %v", fault, trial, owner, next, outage)
			// The user's view: the first request answered through the
			// new owner's forwarder.
			for {
				a, err := request(ctx, c.Client, vip, 300*time.Millisecond)
				if err == nil && forwardedBy(c, a.from) == next {
					served = append(served, time.Since(start))
					break
				}
				if time.Since(start) > time.Minute {
					t.Fatalf("%s trial %d: a minute after the fault no request is forwarded by %s: %+v %v", fault, trial, next, a, err)
				}
			}
			if fault == "linkdown" {
				// The cut-off owner still runs: only the survivors'
				// answers can be checked while it is away.
				waitAnsweredBy(next)
				c.setPort(t, owner, true)
				healStart := time.Now()
				// Once the cluster is whole again the owner takes its
				// address back and announces it, so the client follows
				// without asking.
				if out, ok := waitFor(time.Minute, func() (string, bool) {
					m, err := neigh.mac(vip)
					return fmt.Sprintf("client's neighbour entry for %s: %q (%v), want %s", vip, m, err, macs[owner]), m == macs[owner]
				}); !ok {
					t.Fatalf("linkdown trial %d: %s's link is back, but %s", trial, owner, out)
				}
				t.Logf("linkdown trial %d: link of %s back; the client's neighbour entry pointed at it again after %v", trial, owner, time.Since(healStart))
				waitSoleOwner(owner)
				continue
			}
			<-speakers[owner].Done()
			waitSoleOwner(next)

			// The node comes back; rendezvous hashing gives it its
			// address again, and only that one.
			speakers[owner] = startSpeaker(t, kubeconfig, c.Node(owner))
			waitSoleOwner(owner)
		}
		t.Logf("l2-failover-request %s", percentiles(fault, served))
		t.Logf("l2-failover %s", percentiles(fault, outages))
	}
}

// percentiles formats the figures of a failover benchmark line.
func percentiles(fault string, ds []time.Duration) string {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	// p99 of n trials is the (ceil(0.99 n))-th smallest: the maximum
	// below 100 trials.
	p99 := ds[(len(ds)*99+99)/100-1]
	return fmt.Sprintf("fault=%s n=%d p50_ms=%.1f p99_ms=%.1f min_ms=%.1f max_ms=%.1f", fault, len(ds),
		ms(ds[len(ds)/2]), ms(p99), ms(ds[0]), ms(ds[len(ds)-1]))
}

// nextOwner is who the election picks for vip once owner is gone.
func nextOwner(vip netip.Addr, names []string, owner string) string {
	survivors := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == owner })
	next, _ := election.Winner(vip, survivors)
	return next
}

// setPort sets the bridge's port of a host up or down. Down is a cable
// pull: the host's eth0 stays administratively up with its addresses and
// routes but loses carrier, and its programs keep running and sending into
// the void, unaware, as on a node whose cable or switch port failed. Setting
// the node's own eth0 down instead would be an administrator's act inside
// the node (routes gone, sends failing at once), which tells the node what
// happened.
func (c *labCluster) setPort(t *testing.T, host string, up bool) {
	t.Helper()
	ns, err := netns.GetFromName(c.Bridge.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink in %s: %v", c.Bridge.Namespace, err)
	}
	defer h.Close()
	link, err := h.LinkByName(host)
	if err != nil {
		t.Fatalf("bridge port of %s: %v", host, err)
	}
	if up {
		err = h.LinkSetUp(link)
	} else {
		err = h.LinkSetDown(link)
	}
	if err != nil {
		t.Fatalf("set bridge port of %s up=%v: %v", host, up, err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

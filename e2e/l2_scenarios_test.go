package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/election"
)

// l2Env is a lab cluster with a speaker on every node and a client that
// asks who has an address, as a router or a host on the segment would.
type l2Env struct {
	*labCluster
	// t is the test that owns the lab: speakers started for a subtest
	// must outlive it.
	t        *testing.T
	speakers map[string]*lab.Process
	macs     map[string]string
	names    []string
	arpc     *arp.Client
	ndpc     *ndp.Conn
	clientHW net.HardwareAddr
	neigh    *neighbours
}

// speakerFlags: these scenarios are about who answers; the forwarder has
// scenarios of its own.
var speakerFlags = []string{"--forwarder=off"}

func startL2Env(t *testing.T) *l2Env {
	t.Helper()
	c := startLabCluster(t)
	e := &l2Env{labCluster: c, t: t, speakers: map[string]*lab.Process{}, macs: map[string]string{}}
	for _, n := range c.Nodes {
		e.speakers[n.Name] = startSpeaker(t, c.env.Kubeconfig, n, speakerFlags...)
		e.macs[n.Name] = hardwareAddr(t, n.Host)
		e.names = append(e.names, n.Name)
	}
	e.arpc = arpClient(t, c.Client)
	e.neigh = openNeighbours(t, c.Client)
	err := inNetns(c.Client.Namespace, func() error {
		ifi, err := net.InterfaceByName(c.Client.Iface)
		if err != nil {
			return err
		}
		e.clientHW = ifi.HardwareAddr
		e.ndpc, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	})
	if err != nil {
		t.Fatalf("NDP client on %s: %v", c.Client.Name, err)
	}
	t.Cleanup(func() { _ = e.ndpc.Close() })
	return e
}

func (e *l2Env) nodeOf(mac string) string {
	for n, m := range e.macs {
		if m == mac {
			return n
		}
	}
	return "unknown MAC " + mac
}

// answering asks once who has addr (ARP for IPv4, a Neighbor Solicitation to
// the solicited-node group for IPv6) and returns the nodes that answer,
// sorted.
func (e *l2Env) answering(addr netip.Addr) ([]string, error) {
	var macs []string
	var err error
	if addr.Is4() {
		macs, err = arping(e.arpc, addr, 300*time.Millisecond)
	} else {
		macs, err = e.ndping(addr, 300*time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	nodes := make([]string, 0, len(macs))
	for _, m := range macs {
		nodes = append(nodes, e.nodeOf(m))
	}
	slices.Sort(nodes)
	return nodes, nil
}

// ndping solicits addr and returns the distinct target link-layer
// addresses of the solicited advertisements that arrive within wait, sorted.
func (e *l2Env) ndping(addr netip.Addr, wait time.Duration) ([]string, error) {
	group, err := ndp.SolicitedNodeMulticast(addr)
	if err != nil {
		return nil, err
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: addr, Options: []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: e.clientHW},
	}}
	// The destination's zone names the client's interface, which only
	// resolves inside the client's namespace.
	err = inNetns(e.Client.Namespace, func() error { return e.ndpc.WriteTo(ns, nil, group) })
	if err != nil {
		return nil, fmt.Errorf("send neighbor solicitation for %s: %w", addr, err)
	}
	deadline := time.Now().Add(wait)
	var macs []string
	for {
		if err := e.ndpc.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		m, _, _, err := e.ndpc.ReadFrom()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			slices.Sort(macs)
			return macs, nil
		}
		if err != nil {
			// Other ICMPv6 the socket cannot parse is not our business.
			continue
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != addr || !na.Solicited {
			continue
		}
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target && !slices.Contains(macs, lla.Addr.String()) {
				macs = append(macs, lla.Addr.String())
			}
		}
	}
}

// waitOwner waits until exactly want answers for addr and is the only
// node in the Service's ServiceL2Status objects; want "" means nobody.
func (e *l2Env) waitOwner(t *testing.T, service string, addr netip.Addr, want string) {
	t.Helper()
	var wantNodes []string
	if want != "" {
		wantNodes = []string{want}
	}
	out, ok := waitFor(time.Minute, func() (string, bool) {
		got, err := e.answering(addr)
		if err != nil {
			return err.Error(), false
		}
		owners, table, err := l2Owners(e.labCluster, service)
		if err != nil {
			return err.Error(), false
		}
		return fmt.Sprintf("%s answered by %v; ServiceL2Status nodes %v\n%s", addr, got, owners, table),
			slices.Equal(got, wantNodes) && slices.Equal(owners, wantNodes)
	})
	if !ok {
		t.Fatalf("want %q as the only owner of %s: %s", want, addr, out)
	}
}

// waitNeighbour waits until the client's neighbour entry for addr points at
// node, without sending anything: only the speakers' announcements move it.
func (e *l2Env) waitNeighbour(t *testing.T, addr netip.Addr, node string) time.Duration {
	t.Helper()
	start := time.Now()
	out, ok := waitFor(time.Minute, func() (string, bool) {
		m, err := e.neigh.mac(addr)
		return fmt.Sprintf("client's neighbour entry for %s: %q (%s, %v), want %s", addr, m, e.nodeOf(m), err, node), m == e.macs[node]
	})
	if !ok {
		t.Fatal(out)
	}
	return time.Since(start)
}

// touch sends one datagram to addr from the client, so the client resolves
// it and keeps a neighbour entry, as any client talking to the Service does.
func (e *l2Env) touch(t *testing.T, addr netip.Addr) {
	t.Helper()
	conn, err := e.Client.Dial(context.Background(), "udp", netip.AddrPortFrom(addr, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("hello"))
	_ = conn.Close()
}

func (e *l2Env) apply(t *testing.T, manifest string) {
	t.Helper()
	if out, err := e.env.KubectlInput([]byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// l2Pool is a pool of the given addresses with one L2Advertisement for it;
// adSpec is extra YAML for the advertisement's spec (two-space indented).
func l2Pool(name string, addrs []string, adSpec string) string {
	return fmt.Sprintf(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: %[1]s
  namespace: metallb-system
spec:
  addresses: [%[2]s]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: %[1]s
  namespace: metallb-system
spec:
  ipAddressPools: [%[1]s]
%[3]s`, name, strings.Join(addrs, ", "), adSpec)
}

// deployService creates a LoadBalancer Service asking for addr, with
// extra YAML for its spec, and endpoints on the given nodes' pods; it waits
// until the Service shows the address.
func (e *l2Env) deployService(t *testing.T, name string, addr netip.Addr, spec string, on []*lab.Node) {
	t.Helper()
	e.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
  annotations:
    metallb.io/loadBalancerIPs: "%[2]s"
spec:
  type: LoadBalancer
  selector: {app: %[1]s}
  ports:
  - {port: 80, protocol: TCP, targetPort: 80}
%[3]s`, name, addr, spec))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := cluster.WriteEndpoints(ctx, e.env.Client, "default", name, on,
		[]cluster.Port{{Name: "", Port: 80, Protocol: "TCP"}})
	if err != nil {
		t.Fatal(err)
	}
	out, ok := waitFor(time.Minute, func() (string, bool) {
		out, err := e.env.Kubectl("get", "svc", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		return out, err == nil && strings.TrimSpace(out) == addr.String()
	})
	if !ok {
		t.Fatalf("Service %s never got %s: %q", name, addr, out)
	}
}

// moveEndpoints makes the Service's only ready endpoint the pod of node, as
// the EndpointSlice controller does when the pod is rescheduled.
func (e *l2Env) moveEndpoints(t *testing.T, service string, node *lab.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var s discoveryv1.EndpointSlice
	if err := e.env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: service + "-lab"}, &s); err != nil {
		t.Fatal(err)
	}
	zone := cluster.Zone(node.Number)
	yes := true
	s.Endpoints = []discoveryv1.Endpoint{{
		Addresses:  []string{node.Pod.IPv4.String()},
		Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes},
		NodeName:   &node.Name,
		Zone:       &zone,
	}}
	if err := e.env.Client.Update(ctx, &s); err != nil {
		t.Fatalf("move endpoint of %s to %s: %v", service, node.Name, err)
	}
}

// restartStopped starts a speaker again on every node whose speaker ended.
func (e *l2Env) restartStopped() {
	for _, n := range e.Nodes {
		select {
		case <-e.speakers[n.Name].Done():
			e.speakers[n.Name] = startSpeaker(e.t, e.env.Kubeconfig, n, speakerFlags...)
		default:
		}
	}
}

// addrWhere returns the first address of the lab segment from first
// upwards for which ok holds, so a scenario can pick an address whose
// election outcome it needs rather than depend on the hash's luck.
func addrWhere(t *testing.T, first netip.Addr, ok func(netip.Addr) bool) netip.Addr {
	t.Helper()
	for a, i := first, 0; i < 40; a, i = a.Next(), i+1 {
		if ok(a) {
			return a
		}
	}
	t.Fatalf("no address from %s on satisfies the scenario", first)
	return netip.Addr{}
}

func winner(addr netip.Addr, nodes ...string) string {
	w, _ := election.Winner(addr, nodes)
	return w
}

// TestLabL2Scenarios runs layer-2 scenarios against one lab cluster with a
// real speaker on every node; each scenario brings its own pool, L2Advertisement
// and Service.
func TestLabL2Scenarios(t *testing.T) {
	e := startL2Env(t)

	// IPv6: exactly one node, the election winner, answers NDP for an
	// address of an IPv6 pool; the client's neighbour entry names its MAC.
	t.Run("ipv6", func(t *testing.T) {
		vip := netip.MustParseAddr("fd00:254::50")
		e.apply(t, l2Pool("v6-pool", []string{"fd00:254::50-fd00:254::5f"}, ""))
		e.deployService(t, "v6-service", vip, "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n", e.Nodes)
		owner := winner(vip, e.names...)
		e.waitOwner(t, "v6-service", vip, owner)
		e.touch(t, vip)
		e.waitNeighbour(t, vip, owner)
		t.Logf("%s owns %s: it alone answers neighbor solicitations, with MAC %s", owner, vip, e.macs[owner])
	})

	// externalTrafficPolicy Local: only a node with a ready local endpoint
	// may own the address, and ownership follows the endpoint.
	t.Run("local-traffic-policy", func(t *testing.T) {
		// An address the election would give to another node than the
		// one hosting the endpoint, had the policy been Cluster.
		vip := addrWhere(t, netip.MustParseAddr("172.25.254.100"), func(a netip.Addr) bool {
			return winner(a, e.names...) != "node2"
		})
		e.apply(t, l2Pool("local-pool", []string{vip.String() + "/32"}, ""))
		e.deployService(t, "local-service", vip, "  externalTrafficPolicy: Local\n", []*lab.Node{e.Node("node2")})
		e.waitOwner(t, "local-service", vip, "node2")

		to := e.Node(winner(vip, "node1", "node3"))
		e.moveEndpoints(t, "local-service", to)
		e.waitOwner(t, "local-service", vip, to.Name)
		t.Logf("%s: owned by node2 with the endpoint there, then by %s after the endpoint moved", vip, to.Name)
	})

	// nodeSelectors: only the selected nodes ever own the address, even
	// when the election among all nodes would pick another.
	t.Run("node-selectors", func(t *testing.T) {
		// zone-a holds node1 and node3; node2, in zone-b, would win.
		vip := addrWhere(t, netip.MustParseAddr("172.25.254.110"), func(a netip.Addr) bool {
			return winner(a, e.names...) == "node2"
		})
		e.apply(t, l2Pool("zone-a-pool", []string{vip.String() + "/32"},
			"  nodeSelectors:\n  - matchLabels:\n      topology.kubernetes.io/zone: zone-a\n"))
		e.deployService(t, "zone-a-service", vip, "", e.Nodes)
		first := winner(vip, "node1", "node3")
		e.waitOwner(t, "zone-a-service", vip, first)

		// The selected owner stops: the other selected node takes over,
		// not node2.
		second := nextOwner(vip, []string{"node1", "node3"}, first)
		_ = e.speakers[first].Stop(10 * time.Second)
		e.waitOwner(t, "zone-a-service", vip, second)
		// No selected node left: nobody answers, node2 included.
		_ = e.speakers[second].Stop(10 * time.Second)
		e.waitOwner(t, "zone-a-service", vip, "")
		for range 3 {
			if got, err := e.answering(vip); err != nil || len(got) > 0 {
				t.Fatalf("%s answered by %v (%v) with no selected node running, want nobody", vip, got, err)
			}
		}
		e.restartStopped()
		e.waitOwner(t, "zone-a-service", vip, first)
	})

	// interfaces: an advertisement naming an interface the nodes do not
	// have is answered nowhere; naming eth0 is answered there.
	t.Run("interfaces", func(t *testing.T) {
		vip := netip.MustParseAddr("172.25.254.120")
		e.apply(t, l2Pool("iface-pool", []string{vip.String() + "/32"}, "  interfaces: [eth9]\n"))
		e.deployService(t, "iface-service", vip, "", e.Nodes)
		owner := winner(vip, e.names...)
		// The owner has taken the address (its ServiceL2Status says so)
		// but has nowhere to answer.
		out, ok := waitFor(time.Minute, func() (string, bool) {
			owners, table, err := l2Owners(e.labCluster, "iface-service")
			return fmt.Sprintf("%v (%v)\n%s", owners, err, table), slices.Equal(owners, []string{owner})
		})
		if !ok {
			t.Fatalf("want ServiceL2Status of iface-service from %s: %s", owner, out)
		}
		for range 3 {
			if got, err := e.answering(vip); err != nil || len(got) > 0 {
				t.Fatalf("%s answered by %v (%v) with only interface eth9 advertised, want nobody", vip, got, err)
			}
		}
		e.apply(t, l2Pool("iface-pool", []string{vip.String() + "/32"}, "  interfaces: [eth0]\n"))
		e.waitOwner(t, "iface-service", vip, owner)
	})

	// A partition: node1 cannot reach the other speakers (memberlist
	// traffic dropped both ways, everything else flows). Both sides claim
	// what they think is theirs; once healed, exactly one node answers for
	// each address, the election winner among all nodes, and the client's
	// neighbour entries follow without the client asking: node1 keeps only
	// what the hash gives it.
	t.Run("partition", func(t *testing.T) {
		const cut = "node1"
		vipA := addrWhere(t, netip.MustParseAddr("172.25.254.130"), func(a netip.Addr) bool {
			return winner(a, e.names...) == cut
		})
		vipB := addrWhere(t, vipA.Next(), func(a netip.Addr) bool {
			return winner(a, e.names...) != cut
		})
		e.apply(t, l2Pool("split-pool", []string{vipA.String() + "/32", vipB.String() + "/32"}, ""))
		e.deployService(t, "split-a", vipA, "", e.Nodes)
		e.deployService(t, "split-b", vipB, "", e.Nodes)
		ownerB := winner(vipB, e.names...)
		majorityA := nextOwner(vipA, e.names, cut)
		e.waitOwner(t, "split-a", vipA, cut)
		e.waitOwner(t, "split-b", vipB, ownerB)
		e.touch(t, vipA)
		e.touch(t, vipB)
		e.waitNeighbour(t, vipA, cut)
		e.waitNeighbour(t, vipB, ownerB)

		partition(t, e.Node(cut), true)
		// Each side announces what it now believes it owns.
		e.waitNeighbour(t, vipA, majorityA)
		e.waitNeighbour(t, vipB, cut)
		t.Logf("partitioned: %s announced by %s, %s announced by %s", vipA, majorityA, vipB, cut)

		partition(t, e.Node(cut), false)
		healA := e.waitNeighbour(t, vipA, cut)
		healB := e.waitNeighbour(t, vipB, ownerB)
		t.Logf("healed: the client's entries were back at %s for %s after %v and at %s for %s after %v",
			cut, vipA, healA, ownerB, vipB, healB)
		e.waitOwner(t, "split-a", vipA, cut)
		e.waitOwner(t, "split-b", vipB, ownerB)
	})
}

// partitionTable drops memberlist traffic (port 7946, TCP and UDP, both
// directions) in a node's namespace.
const partitionTable = "ironlb-e2e-partition"

func partition(t *testing.T, n *lab.Node, on bool) {
	t.Helper()
	ruleset := "delete table inet " + partitionTable + "\n"
	if on {
		var b strings.Builder
		fmt.Fprintf(&b, "table inet %s {\n", partitionTable)
		for _, hook := range []string{"input", "output"} {
			fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s priority -10; policy accept;\n", hook, hook)
			for _, m := range []string{"tcp dport", "tcp sport", "udp dport", "udp sport"} {
				fmt.Fprintf(&b, "    %s 7946 drop\n", m)
			}
			b.WriteString("  }\n")
		}
		b.WriteString("}\n")
		ruleset = b.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: nft (partition %v): %v\n%s", n.Name, on, err, out.String())
	}
}

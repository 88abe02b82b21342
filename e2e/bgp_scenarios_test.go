package e2e

// BGP mode scenarios against real FRR, in one lab to keep CI time down:
// iBGP with the router (so local preference is carried), over IPv4 and
// IPv6 sessions.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/e2e/cluster"
	frrstate "github.com/ironlb/ironlb/e2e/frr"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/e2e/manifests"
)

// labHoldTime is the scenarios' BGP hold time: short, so that a hung
// speaker's routes go within the test's patience.
const labHoldTime = 3 * time.Second

// bgpScenarioConfig: one dual-stack pool advertised with local preference
// and communities (one through an alias) to an IPv4 and an IPv6 session
// with the router, both iBGP with a 3 s hold time.
func bgpScenarioConfig() string {
	peer := func(name, addr string) string {
		return manifests.BGPPeer(manifests.Peer{Name: name, MyASN: manifests.NodeASN, PeerASN: manifests.NodeASN, Address: addr,
			Spec: fmt.Sprintf("  holdTime: %s\n  keepaliveTime: 1s\n", labHoldTime)})
	}
	return manifests.Join(manifests.Pool(manifests.FirstPoolRange, "fd00:254::50-fd00:254::99"),
		`apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: lab-communities
  namespace: metallb-system
spec:
  communities:
  - name: lab-edge
    value: "64512:200"
`,
		manifests.BGPAdvertisement(`  localPref: 250
  communities:
  - "64512:100"
  - lab-edge
  - large:64512:1:2
`),
		peer("tor", manifests.RouterIPv4), peer("tor6", "fd00:254::1"))
}

// labService is a LoadBalancer Service for the scenarios: port 80, with
// the given policy and address family.
func labService(name string, local bool, family corev1.IPFamily) string {
	policy := "Cluster"
	if local {
		policy = "Local"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: default
spec:
  type: LoadBalancer
  externalTrafficPolicy: %s
  ipFamilyPolicy: SingleStack
  ipFamilies: [%s]
  selector:
    app: %s
  ports:
  - port: 80
    protocol: TCP
`, name, policy, family, name)
}

// applyService applies a Service, writes the EndpointSlice of the pods of
// the given nodes, and returns the address the controller assigned.
func (c *labCluster) applyService(t *testing.T, name, manifest string, nodes []*lab.Node) netip.Addr {
	t.Helper()
	c.apply(t, name+".yaml", manifest)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.WriteEndpoints(ctx, c.env.Client, "default", name, nodes,
		[]cluster.Port{{Name: "", Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
		t.Fatal(err)
	}
	var ip netip.Addr
	out, ok := waitFor(time.Minute, func() (string, bool) {
		out, err := c.env.Kubectl("get", "svc", name)
		s, _ := column(out, name, "EXTERNAL-IP")
		a, perr := netip.ParseAddr(s)
		ip = a
		return out, err == nil && perr == nil
	})
	if !ok {
		t.Fatalf("kubectl get svc %s: no EXTERNAL-IP; last output:\n%s", name, out)
	}
	return ip
}

// hostPrefix is the route of one address.
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// TestLabBGPScenarios, against FRR over iBGP: the communities and local
// preference configured reach the router; a Service with
// externalTrafficPolicy Local is advertised only from the node with its
// endpoint; an IPv6 address goes over the IPv6 sessions, and deleting its
// Service withdraws it from every node; a speaker killed with SIGKILL loses
// its route as soon as the router sees its connection close; a hung one
// (SIGSTOP: its connection stays open, its keepalives stop) loses it when
// the hold time expires.
func TestLabBGPScenarios(t *testing.T) {
	c := startLabCluster(t)
	f := startFRRWith(t, c.Lab, frrOptions{asn: manifests.NodeASN, ipv6: true})

	c.apply(t, "bgp.yaml", bgpScenarioConfig())
	c.deployExampleService(t)
	vip := netip.MustParseAddr("172.25.254.50")
	localNode := c.Nodes[1]
	localVIP := c.applyService(t, "local-web", labService("local-web", true, corev1.IPv4Protocol), []*lab.Node{localNode})
	vip6 := c.applyService(t, "web6", labService("web6", false, corev1.IPv6Protocol), c.Nodes)

	speakers := map[string]*lab.Process{}
	var all, all6 []string
	for _, n := range c.Nodes {
		speakers[n.Name] = startSpeaker(t, c.env.Kubeconfig, n)
		all = append(all, n.IPv4.String())
		all6 = append(all6, n.IPv6.String())
	}
	slices.Sort(all)
	slices.Sort(all6)

	// paths waits until FRR's BGP table holds, for the address, one path
	// from each of the wanted nodes, and returns them.
	paths := func(a netip.Addr, from []string, limit time.Duration) []frrstate.Path {
		t.Helper()
		var got []frrstate.Path
		out, ok := waitFor(limit, func() (string, bool) {
			ps, err := f.BGPPaths(hostPrefix(a))
			if err != nil {
				return err.Error(), false
			}
			got = ps
			var hops []string
			for _, p := range ps {
				hops = append(hops, p.NextHop)
			}
			return fmt.Sprintf("paths from %v", hops), slices.Equal(hops, from)
		})
		if !ok {
			summary, _ := f.Vtysh("show bgp summary")
			t.Fatalf("want paths for %s from %v at the router, last: %s\n%s", a, from, out, summary)
		}
		return got
	}

	t.Run("communities and local preference", func(t *testing.T) {
		got := paths(vip, all, 2*time.Minute)
		var want []frrstate.Path
		for _, h := range all {
			want = append(want, frrstate.Path{NextHop: h, LocalPref: 250, Communities: "64512:100 64512:200", LargeCommunities: "64512:1:2"})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("paths of %s at the router (-want +got):\n%s", vip, diff)
		}
	})

	t.Run("Local policy advertises from nodes with an endpoint only", func(t *testing.T) {
		// The other nodes are up (they advertise the first Service), so
		// their silence is the policy's doing.
		paths(vip, all, 2*time.Minute)
		paths(localVIP, []string{localNode.IPv4.String()}, time.Minute)
	})

	t.Run("IPv6 over IPv6 sessions; deleting the Service withdraws everywhere", func(t *testing.T) {
		paths(vip6, all6, 2*time.Minute)
		deleted := time.Now()
		c.kubectl(t, "delete", "svc", "web6")
		paths(vip6, nil, time.Minute)
		t.Logf("bgp-delete-withdraw ms=%.0f (kubectl delete to no path from %d nodes at FRR)", ms(time.Since(deleted)), len(all6))
	})

	t.Run("killed speaker withdraws at once, hung speaker after the hold time", func(t *testing.T) {
		paths(vip, all, time.Minute)
		killed := c.Nodes[0]
		start := time.Now()
		speakers[killed.Name].Kill()
		rest := slices.DeleteFunc(slices.Clone(all), func(h string) bool { return h == killed.IPv4.String() })
		paths(vip, rest, time.Minute)
		t.Logf("bgp-kill-withdraw ms=%.0f (SIGKILL to %d paths at FRR: the kernel closes the session)", ms(time.Since(start)), len(rest))

		hung := localNode
		p := speakers[hung.Name]
		start = time.Now()
		if err := syscall.Kill(p.Pid(), syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s: %v", p, err)
		}
		defer p.Kill() // SIGKILL ends a stopped process too
		rest = slices.DeleteFunc(slices.Clone(rest), func(h string) bool { return h == hung.IPv4.String() })
		paths(vip, rest, time.Minute)
		paths(localVIP, nil, time.Minute)
		took := time.Since(start)
		t.Logf("bgp-hold-withdraw ms=%.0f (SIGSTOP to %d paths at FRR; hold time %v)", ms(took), len(rest), labHoldTime)
		// Keepalives go every second, so the router's last one from the
		// node came at most a second before the stop.
		if took < labHoldTime-time.Second {
			t.Errorf("hung speaker's route withdrawn after %v, before the hold time %v could expire", took, labHoldTime)
		}
	})
}

// TestLabBGPAnnounceBench (`make bench-bgp`; runs only when
// IRONLB_BGP_BENCH_SERVICES is set) measures, for each of N Services created
// one after another with ready endpoints on every node, the time from the
// controller writing the Service's address (seen through a watch) to the
// route in the router's kernel table (seen through netlink), then, deleting
// them one by one, from the delete call to the route leaving the table. The
// last line is
//
//	bgp-announce n=N p50_ms=X p99_ms=Y withdraw_p50_ms=Z
func TestLabBGPAnnounceBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("IRONLB_BGP_BENCH_SERVICES"))
	if n <= 0 {
		t.Skip("a benchmark: set IRONLB_BGP_BENCH_SERVICES (make bench-bgp)")
	}
	if n > 50 {
		t.Fatalf("IRONLB_BGP_BENCH_SERVICES=%d: the pool holds 50 addresses", n)
	}
	c := startLabCluster(t)
	f := startFRR(t, c.Lab)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kernel, err := frrstate.WatchKernel(f.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer kernel.Close()
	watcher, err := client.NewWithWatch(c.env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	c.apply(t, "bgp.yaml", manifests.BGPFirstPool())
	var all []netip.Addr
	for _, nd := range c.Nodes {
		startSpeaker(t, c.env.Kubeconfig, nd)
		all = append(all, nd.IPv4)
	}
	slices.SortFunc(all, netip.Addr.Compare)
	// Sessions up before the clock runs: the route of a first Service shows
	// up once every node peers.
	c.deployExampleService(t)
	if _, err := kernel.Wait(ctx, netip.MustParsePrefix("172.25.254.50/32"), func(h []netip.Addr) bool { return slices.Equal(h, all) }); err != nil {
		t.Fatalf("sessions up: %v", err)
	}
	c.kubectl(t, "delete", "svc", "dhj-service")

	w, err := watcher.Watch(ctx, &corev1.ServiceList{}, client.InNamespace("default"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	assigned := map[string]chan time.Time{}
	for i := range n {
		assigned[fmt.Sprintf("bench-%02d", i)] = make(chan time.Time, 1)
	}
	go func() {
		for ev := range w.ResultChan() {
			at := time.Now()
			svc, ok := ev.Object.(*corev1.Service)
			if !ok || len(svc.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			if ch, ok := assigned[svc.Name]; ok {
				select {
				case ch <- at:
				default:
				}
			}
		}
	}()

	var announce, withdraw []time.Duration
	vips := map[string]netip.Addr{}
	for i := range n {
		name := fmt.Sprintf("bench-%02d", i)
		if err := cluster.WriteEndpoints(ctx, c.env.Client, "default", name, c.Nodes,
			[]cluster.Port{{Name: "", Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}
		if err := c.env.Client.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		var at time.Time
		select {
		case at = <-assigned[name]:
		case <-ctx.Done():
			t.Fatalf("service %s never got an address", name)
		}
		if err := c.env.Client.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			t.Fatal(err)
		}
		vip := netip.MustParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		vips[name] = vip
		routed, err := kernel.Wait(ctx, hostPrefix(vip), func(h []netip.Addr) bool { return len(h) > 0 })
		if err != nil {
			t.Fatal(err)
		}
		announce = append(announce, routed.Sub(at))
		// The next Service starts on a quiet system: all nodes advertise.
		if _, err := kernel.Wait(ctx, hostPrefix(vip), func(h []netip.Addr) bool { return slices.Equal(h, all) }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		name := fmt.Sprintf("bench-%02d", i)
		start := time.Now()
		if err := c.env.Client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
			t.Fatal(err)
		}
		gone, err := kernel.Wait(ctx, hostPrefix(vips[name]), func(h []netip.Addr) bool { return len(h) == 0 })
		if err != nil {
			t.Fatal(err)
		}
		withdraw = append(withdraw, gone.Sub(start))
	}
	slices.Sort(announce)
	slices.Sort(withdraw)
	p99 := announce[min(len(announce)-1, len(announce)*99/100)]
	t.Logf("bgp-announce-detail min_ms=%.1f max_ms=%.1f withdraw_p99_ms=%.1f",
		ms(announce[0]), ms(announce[len(announce)-1]), ms(withdraw[min(len(withdraw)-1, len(withdraw)*99/100)]))
	t.Logf("bgp-announce n=%d p50_ms=%.1f p99_ms=%.1f withdraw_p50_ms=%.1f", n, ms(announce[len(announce)/2]), ms(p99), ms(withdraw[len(withdraw)/2]))
}

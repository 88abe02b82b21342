package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/internal/election"
)

// answer is what a backend said through the service address: which pod
// served the request and the source address it saw (the forwarding node's,
// since Cluster traffic is masqueraded).
type answer struct {
	pod, from string
}

// curl fetches http://<vip>/ from the client as a user would, with curl.
func curl(ctx context.Context, c *labCluster, vip netip.Addr) (answer, error) {
	return curlFrom(ctx, c.Client, vip)
}

// curlFrom fetches http://<vip>/ with curl from any host of the lab.
func curlFrom(ctx context.Context, h *lab.Host, vip netip.Addr) (answer, error) {
	out, err := h.Exec(ctx, "curl", "-s", "--max-time", "2", "http://"+vip.String()+"/")
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(vip, out)
}

// podsAnswering curls vip n times from h and returns the pods that
// answered, each once, in order of first answer.
func podsAnswering(ctx context.Context, h *lab.Host, vip netip.Addr, n int) ([]string, error) {
	var pods []string
	for range n {
		a, err := curlFrom(ctx, h, vip)
		if err != nil {
			return pods, err
		}
		if !slices.Contains(pods, a.pod) {
			pods = append(pods, a.pod)
		}
	}
	return pods, nil
}

// request makes one HTTP request to vip from h with a short deadline, for
// timing: curl's process start-up would blur the figure.
func request(ctx context.Context, h *lab.Host, vip netip.Addr, timeout time.Duration) (answer, error) {
	hc := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: h.Dial, DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+vip.String()+"/", nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(vip, string(body))
}

func parseAnswer(vip netip.Addr, out string) (answer, error) {
	f := strings.Fields(out)
	if len(f) != 2 {
		return answer{}, fmt.Errorf("http://%s/: unexpected answer %q", vip, out)
	}
	from, _, _ := strings.Cut(f[1], ":")
	return answer{pod: f[0], from: from}, nil
}

// forwardedBy names the node whose address a backend saw as the client: a
// node masquerades with its pod-network gateway toward its own pod and with
// its segment address toward the others.
func forwardedBy(c *labCluster, from string) string {
	for _, n := range c.Nodes {
		if from == n.IPv4.String() || from == n.Gateway.String() {
			return n.Name
		}
	}
	return "unknown source " + from
}

// TestLabForwarder: with speakers on every node, the owner of the example
// Service's address carries its traffic to the pods: curl from the client
// reaches all three pods in turn (rr); when the owner's speaker is killed,
// the next owner carries the traffic (the time until the first answer
// through it is logged as `l2-failover-curl ms=`); when the next owner's
// speaker stops cleanly, the last node takes over and the stopped node's
// forwarding table is gone; with sessionAffinity ClientIP the client stays
// on one pod.
func TestLabForwarder(t *testing.T) {
	c := startLabCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	c.kubectl(t, "apply", "-f", examplePath(t, "01-l2-first-pool.yaml"))
	c.deployExampleService(t)
	vip := netip.MustParseAddr("172.25.254.50")
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		out, err := c.env.Kubectl("get", "svc", "dhj-service", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip} {.status.loadBalancer.ingress[*].ipMode}")
		return out, err == nil && out == vip.String()+" Proxy"
	}); !ok {
		t.Fatalf("dhj-service never got %s with ipMode Proxy: %q", vip, out)
	}

	speakers := map[string]*lab.Process{}
	macs := map[string]string{}
	var names, pods []string
	for _, n := range c.Nodes {
		speakers[n.Name] = startSpeaker(t, c.env.Kubeconfig, n)
		macs[n.Name] = hardwareAddr(t, n.Host)
		names = append(names, n.Name)
		pods = append(pods, n.Pod.Name)
	}
	slices.Sort(pods)
	owner, _ := election.Winner(vip, names)

	// Only the owner answers ARP for the address: the forwarder does not
	// make any node answer for it by itself.
	arpc := arpClient(t, c.Client)
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		got, err := arping(arpc, vip, 300*time.Millisecond)
		return fmt.Sprintf("ARP for %s answered by %v, want only %s (%s)", vip, got, owner, macs[owner]), err == nil && slices.Equal(got, []string{macs[owner]})
	}); !ok {
		t.Fatal(out)
	}

	var first answer
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curl(ctx, c, vip)
		first = a
		return fmt.Sprintf("curl through %s: %+v %v", vip, a, err), err == nil && slices.Contains(pods, a.pod)
	}); !ok {
		t.Fatalf("%s\n%s", out, c.Logs())
	}
	t.Logf("curl http://%s/ answered by %s, forwarded by %s", vip, first.pod, forwardedBy(c, first.from))
	// This kernel has no IPVS: auto must say so and pick nftables, once.
	for name, p := range speakers {
		var chosen []string
		out, ok := waitFor(time.Minute, func() (string, bool) {
			chosen = chosen[:0]
			for _, line := range strings.Split(p.Log(), "\n") {
				if strings.Contains(line, "forwarder chosen") {
					chosen = append(chosen, line)
				}
			}
			return fmt.Sprintf("speaker of %s logged the forwarder choice as %q, want one line naming nftables", name, chosen),
				len(chosen) == 1 && strings.Contains(chosen[0], "nftables")
		})
		if !ok {
			t.Error(out)
		} else if name == owner {
			t.Logf("speaker of %s: %s", name, chosen[0])
		}
	}

	// Round robin: a dozen requests reach every pod.
	var served []string
	for range 12 {
		a, err := curl(ctx, c, vip)
		if err != nil {
			t.Fatal(err)
		}
		if by := forwardedBy(c, a.from); by != owner {
			t.Errorf("request forwarded by %s, want the owner %s", by, owner)
		}
		if !slices.Contains(served, a.pod) {
			served = append(served, a.pod)
		}
	}
	slices.Sort(served)
	if !slices.Equal(pods, served) {
		t.Errorf("pods answering 12 requests through %s: got %v, want all of %v", vip, served, pods)
	}

	// Failover: the owner's speaker dies; the next owner must carry the
	// traffic. The dead speaker's node keeps its (stale) forwarding rules,
	// so answers still forwarded by it do not count.
	next := nextOwner(vip, names, owner)
	start := time.Now()
	speakers[owner].Kill()
	var outage time.Duration
	for {
		a, err := curl(ctx, c, vip)
		if err == nil && forwardedBy(c, a.from) == next {
			outage = time.Since(start)
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("a minute after the speaker of %s was killed, requests are not forwarded by %s: last %+v %v\n%s", owner, next, a, err, c.Logs())
		}
	}
	t.Logf("killed the speaker of %s; %s carried the traffic after %v", owner, next, outage)
	t.Logf("l2-failover-curl ms=%.1f from=%s to=%s", ms(outage), owner, next)

	// A clean stop: the speaker leaves, keeps forwarding what still arrives
	// while the address moves, then takes its node's forwarding table away.
	last := nextOwner(vip, slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == owner }), next)
	stopped := make(chan error, 1)
	start = time.Now()
	go func() { stopped <- speakers[next].Stop(30 * time.Second) }()
	failed := 0
	for {
		a, err := curl(ctx, c, vip)
		if err != nil {
			failed++
		}
		if err == nil && forwardedBy(c, a.from) == last {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("a minute after the speaker of %s was stopped, requests are not forwarded by %s: last %+v %v\n%s", next, last, a, err, c.Logs())
		}
	}
	t.Logf("stopped the speaker of %s; %s carried the traffic after %v, %d requests failed meanwhile", next, last, time.Since(start), failed)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n.Name != next {
			continue
		}
		out, err := n.Exec(ctx, "nft", "list", "tables")
		if err != nil {
			t.Fatalf("nft list tables on %s: %v", n.Name, err)
		}
		if strings.Contains(out, "inet ironlb") {
			t.Errorf("after a clean stop %s still holds its forwarding table:\n%s", n.Name, out)
		}
		if log := speakers[next].Log(); !strings.Contains(log, "removed the forwarding state") {
			t.Errorf("the stopped speaker of %s did not log removing its forwarding state:\n%s", n.Name, log)
		}
	}

	// ClientIP affinity: once the speaker has applied it, the client
	// stays on one pod.
	c.kubectl(t, "patch", "svc", "dhj-service", "--type=merge", "-p", `{"spec":{"sessionAffinity":"ClientIP"}}`)
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		got, err := podsAnswering(ctx, c.Client, vip, 9)
		return fmt.Sprintf("pods answering 9 requests with ClientIP affinity: %v %v", got, err), err == nil && len(got) == 1
	}); !ok {
		t.Fatal(out)
	} else {
		t.Log(out)
	}
}

// TestLabForwarderNodeSide: a pod reaches its own Service through the
// service address, also when the forwarder sends the request back to the
// very pod that made it (hairpin) on the owner node, and from a pod of
// another node, whose request goes out through the router to the owner.
// Then another program deletes the owner's forwarding table: the speaker
// puts it back by itself within its resync period, with nothing changed in
// the cluster.
func TestLabForwarderNodeSide(t *testing.T) {
	c := startLabCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.kubectl(t, "apply", "-f", examplePath(t, "01-l2-first-pool.yaml"))
	c.deployExampleService(t)
	vip := netip.MustParseAddr("172.25.254.50")
	var names []string
	for _, n := range c.Nodes {
		startSpeaker(t, c.env.Kubeconfig, n, "--resync-period=2s")
		names = append(names, n.Name)
	}
	owner, _ := election.Winner(vip, names)
	other := c.Node(nextOwner(vip, names, owner))
	for _, n := range []*lab.Node{c.Node(owner), other} {
		// Round robin over three pods: within a dozen requests the pod
		// asking is also the pod answering.
		out, ok := waitFor(time.Minute, func() (string, bool) {
			served, err := podsAnswering(ctx, n.Pod, vip, 12)
			return fmt.Sprintf("pods answering %s through %s: %v %v", n.Pod.Name, vip, served, err), err == nil && slices.Contains(served, n.Pod.Name)
		})
		if !ok {
			t.Fatalf("%s\n%s", out, c.Logs())
		}
		t.Log(out)
	}

	if out, err := c.Node(owner).Exec(ctx, "nft", "delete", "table", "inet", "ironlb"); err != nil {
		t.Fatalf("nft delete table inet ironlb on %s: %v: %s", owner, err, out)
	}
	deleted := time.Now()
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curl(ctx, c, vip)
		return fmt.Sprintf("curl through %s after the table was deleted on %s: %+v %v", vip, owner, a, err), err == nil && forwardedBy(c, a.from) == owner
	}); !ok {
		t.Fatalf("%s\n%s", out, c.Logs())
	}
	t.Logf("forwarding table deleted on %s; curl answered through it again after %v", owner, time.Since(deleted).Round(time.Millisecond))
}

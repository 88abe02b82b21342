package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/e2e/cluster"
)

// TestLabExamples applies the other tutorial manifests of examples/
// unchanged and checks what their users expect, through the speakers and the
// forwarder as a client on the segment sees them:
//   - 02: the pool 192.168.100.100-150 gives `kubectl get svc nginx-lb`
//     EXTERNAL-IP 192.168.100.100, and curl from the client answers;
//   - 05: sessionAffinity ClientIP keeps one client on one backend;
//   - 04: a Service without a selector reaches the host outside the cluster
//     that its hand-written EndpointSlice names.
func TestLabExamples(t *testing.T) {
	c := startLabCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The tutorial's LAN: the client reaches the pool's addresses on the
	// segment, and the host the mysql example names sits behind the router.
	mustExec(ctx, t, c.Client.Exec, "ip", "route", "add", "192.168.100.0/24", "dev", "eth0")
	mustExec(ctx, t, c.Router.Exec, "ip", "link", "set", "lo", "up")
	mustExec(ctx, t, c.Router.Exec, "ip", "addr", "add", "192.168.128.11/32", "dev", "lo")
	if _, err := c.Router.Start(backendPath, "-name", "mysql-host", "-http", "", "-udp", "", "-tcp", ":3306"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		startSpeaker(t, c.env.Kubeconfig, n)
	}
	var pods []string
	for _, n := range c.Nodes {
		pods = append(pods, n.Pod.Name)
	}
	slices.Sort(pods)

	c.kubectl(t, "apply", "-f", examplePath(t, "02-l2-pool-192-168-100.yaml"))
	c.kubectl(t, "create", "service", "loadbalancer", "nginx-lb", "--tcp=80:80")
	if err := cluster.WriteEndpoints(ctx, c.env.Client, "default", "nginx-lb", c.Nodes,
		[]cluster.Port{{Name: "80-80", Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
		t.Fatal(err)
	}
	c.waitExternalIP(t, "nginx-lb", "192.168.100.100")
	nginx := netip.MustParseAddr("192.168.100.100")
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curl(ctx, c, nginx)
		return fmt.Sprintf("curl http://%s/: %+v %v", nginx, a, err), err == nil && slices.Contains(pods, a.pod)
	}); !ok {
		t.Fatalf("%s\n%s", out, c.Logs())
	}

	c.kubectl(t, "apply", "-f", examplePath(t, "05-session-affinity.yaml"))
	if err := cluster.WriteEndpoints(ctx, c.env.Client, "default", "my-nginx", c.Nodes,
		[]cluster.Port{{Name: "tcp-80", Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
		t.Fatal(err)
	}
	c.waitExternalIP(t, "my-nginx", "192.168.100.101")
	sticky := netip.MustParseAddr("192.168.100.101")
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		got, err := podsAnswering(ctx, c.Client, sticky, 9)
		return fmt.Sprintf("pods answering 9 requests to my-nginx (sessionAffinity ClientIP): %v %v", got, err), err == nil && len(got) == 1
	}); !ok {
		t.Fatalf("%s\n%s", out, c.Logs())
	}

	c.kubectl(t, "apply", "-f", examplePath(t, "04-service-external-endpoints.yaml"))
	c.waitExternalIP(t, "mysql", "192.168.100.102")
	if out, ok := waitFor(time.Minute, func() (string, bool) {
		got, err := tcpHello(ctx, c.Client.Dial, "192.168.100.102:3306")
		return fmt.Sprintf("connect to mysql at 192.168.100.102:3306: %q %v", got, err), err == nil && strings.HasPrefix(got, "mysql-host ")
	}); !ok {
		t.Fatalf("%s\n%s", out, c.Logs())
	}
}

// waitExternalIP waits until `kubectl get svc name` shows want as its
// EXTERNAL-IP, and returns that output.
func (c *labCluster) waitExternalIP(t *testing.T, name, want string) string {
	t.Helper()
	out, ok := waitFor(time.Minute, func() (string, bool) {
		out, err := c.env.Kubectl("get", "svc", name)
		ip, _ := column(out, name, "EXTERNAL-IP")
		return out, err == nil && ip == want
	})
	if !ok {
		events, _ := c.env.Kubectl("get", "events", "-A")
		yaml, _ := c.env.Kubectl("get", "svc", name, "-o", "yaml")
		t.Fatalf("kubectl get svc %s: EXTERNAL-IP never became %s; last output:\n%s\n%s\nevents:\n%s", name, want, out, yaml, events)
	}
	return out
}

// tcpHello connects and returns the first line the server sends.
func tcpHello(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), address string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := dial(ctx, "tcp", address)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func mustExec(ctx context.Context, t *testing.T, exec func(context.Context, string, ...string) (string, error), name string, args ...string) {
	t.Helper()
	if out, err := exec(ctx, name, args...); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/e2e/lab"
)

// labCluster is a lab with a control plane on the host's lab address, Node
// objects for its nodes, and `ironlb controller` running on the host.
type labCluster struct {
	*lab.Lab
	env        *controlplane.Env
	controller *lab.Process
}

func startLabCluster(t *testing.T) *labCluster {
	t.Helper()
	l := lab.NewForTest(t, lab.Config{Backend: backendPath})
	env, err := controlplane.StartWith(controlplane.Options{BindAddress: l.Host.IPv4.String()})
	if err != nil {
		t.Fatalf("start control plane on %s: %v", l.Host.IPv4, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.Register(ctx, env.Client, l); err != nil {
		t.Fatal(err)
	}
	p, err := cluster.StartController(l, env, ironlbPath)
	if err != nil {
		t.Fatal(err)
	}
	// Stop the controller while the control plane is still up, so its log
	// ends with its own shutdown rather than connection errors.
	t.Cleanup(func() { _ = p.Stop(10 * time.Second) })
	return &labCluster{Lab: l, env: env, controller: p}
}

// deployExampleService applies examples/03 unchanged, writes the
// EndpointSlice of the lab's pods as the EndpointSlice controller would (no
// kubelet runs the Deployment's pods; the lab's pods stand in for them), and
// waits until `kubectl get svc dhj-service` shows EXTERNAL-IP
// 172.25.254.50, returning that output.
func (c *labCluster) deployExampleService(t *testing.T) string {
	t.Helper()
	c.kubectl(t, "apply", "-f", examplePath(t, "03-service-loadbalancer.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.WriteEndpoints(ctx, c.env.Client, "default", "dhj-service", c.Nodes,
		[]cluster.Port{{Name: "", Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
		t.Fatal(err)
	}
	return c.waitExternalIP(t, "dhj-service", "172.25.254.50")
}

// kubectl runs kubectl as a user would and fails the test on error.
func (c *labCluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.env.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func examplePath(t *testing.T, name string) string {
	t.Helper()
	dir, err := controlplane.ExamplesDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// column returns a column of the row for name in kubectl's table output.
func column(table, name, header string) (string, bool) {
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 2 {
		return "", false
	}
	col := -1
	for i, h := range strings.Fields(lines[0]) {
		if h == header {
			col = i
		}
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if col >= 0 && len(f) > col && f[0] == name {
			return f[col], true
		}
	}
	return "", false
}

// waitFor polls check until it reports done or the deadline passes, and
// returns the last output so a failure shows what the user would have seen.
func waitFor(timeout time.Duration, check func() (string, bool)) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		out, ok := check()
		if ok || time.Now().After(deadline) {
			return out, ok
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestLabFirstPool is the first tutorial step: the example pool and
// advertisement and the example Service, applied unchanged, give the Service
// the pool's first address.
func TestLabFirstPool(t *testing.T) {
	c := startLabCluster(t)
	c.kubectl(t, "apply", "-f", examplePath(t, "01-l2-first-pool.yaml"))
	out := c.deployExampleService(t)
	t.Logf("kubectl get svc dhj-service:\n%s", out)

	pools := c.kubectl(t, "get", "ipaddresspools", "-A")
	if !strings.Contains(pools, "first-pool") {
		t.Errorf("kubectl get ipaddresspools -A does not list first-pool:\n%s", pools)
	}
}

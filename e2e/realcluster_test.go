package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/e2e/kubenode"
	"github.com/ironlb/ironlb/e2e/lab"
	"github.com/ironlb/ironlb/e2e/manifests"
)

// Images of the real cluster, imported into every node's containerd.
const (
	pauseImage   = "ironlb.local/pause:lab"
	backendImage = "ironlb.local/backend:lab"
	ironlbImage  = "ironlb.local/ironlb:lab"
)

// realCluster is a lab whose nodes are real Kubernetes nodes.
type realCluster struct {
	*lab.Lab
	env  *controlplane.Env
	kube *kubenode.Cluster
}

// startRealCluster builds the lab without stand-in pods, a control plane
// serving a real cluster on the host's lab address, and the nodes; it waits
// for every Node to be Ready. Everything is torn down when the test ends,
// and the test fails if the host's namespaces keep anything afterwards.
func startRealCluster(t *testing.T) *realCluster {
	t.Helper()
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before, err := kubenode.SnapshotHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := kubenode.SnapshotHost(context.Background())
		if err != nil {
			t.Errorf("read host state after the cluster: %v", err)
			return
		}
		if d := before.Diff(after); len(d) > 0 {
			t.Errorf("the real cluster left state in the host's namespaces:\n%s", strings.Join(d, "\n"))
		}
	})
	dir := t.TempDir()
	pause, err := cluster.Build(ctx, dir, "github.com/ironlb/ironlb/e2e/pause", "pause")
	if err != nil {
		t.Fatal(err)
	}
	images, err := kubenode.BuildImages(ctx, dir,
		kubenode.Image{Ref: pauseImage, Binary: pause},
		kubenode.Image{Ref: backendImage, Binary: backendPath},
		kubenode.Image{Ref: ironlbImage, Binary: ironlbPath})
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewForTest(t, lab.Config{NoPods: true})
	env, err := controlplane.StartWith(controlplane.Options{BindAddress: l.Host.IPv4.String(), Cluster: true})
	if err != nil {
		t.Fatalf("start control plane on %s: %v", l.Host.IPv4, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	start := time.Now()
	kube, err := kubenode.Start(ctx, kubenode.Config{
		Lab: l, Env: env, Pause: pause, SandboxImage: pauseImage, Images: images, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kube.Close(); err != nil {
			t.Errorf("stop the real cluster: %v", err)
		}
	})
	t.Logf("%d nodes Ready %v after start", len(kube.Nodes), time.Since(start).Round(time.Millisecond))
	return &realCluster{Lab: l, env: env, kube: kube}
}

func (c *realCluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.env.Kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *realCluster) apply(t *testing.T, manifest string) {
	t.Helper()
	if out, err := c.env.KubectlInput([]byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl apply:\n%s", out)
	}
}

// backendManifest: the lab's backend as a Deployment, one pod per node, and
// a Service selecting it. Pods answer with their name (the hostname).
const backendManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels:
      app: backend
  template:
    metadata:
      labels:
        app: backend
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels:
            app: backend
      containers:
      - name: backend
        image: ` + backendImage + `
        imagePullPolicy: IfNotPresent
        ports:
        - name: http
          containerPort: 80
        readinessProbe:
          httpGet:
            path: /
            port: http
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: default
spec:
  selector:
    app: backend
  ports:
  - name: http
    port: 80
    targetPort: http
`

// podInfo is what `kubectl get pods -o json` says of a pod.
type podInfo struct {
	Name, Node, IP, Phase string
	Ready                 bool
}

func (c *realCluster) pods(t *testing.T, namespace, selector string) []podInfo {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Spec     struct{ NodeName string }
			Status   struct {
				Phase      string
				PodIP      string
				Conditions []struct{ Type, Status string }
			}
		}
	}
	out := c.kubectl(t, "get", "pods", "-n", namespace, "-l", selector, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get pods -o json: %v", err)
	}
	var pods []podInfo
	for _, p := range list.Items {
		pi := podInfo{Name: p.Metadata.Name, Node: p.Spec.NodeName, IP: p.Status.PodIP, Phase: p.Status.Phase}
		for _, cond := range p.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				pi.Ready = true
			}
		}
		pods = append(pods, pi)
	}
	return pods
}

// waitPodsReady waits until n pods of the selector are Running and Ready.
func (c *realCluster) waitPodsReady(t *testing.T, namespace, selector string, n int, timeout time.Duration) []podInfo {
	t.Helper()
	var pods []podInfo
	out, ok := waitFor(timeout, func() (string, bool) {
		pods = c.pods(t, namespace, selector)
		ready := 0
		for _, p := range pods {
			if p.Phase == "Running" && p.Ready {
				ready++
			}
		}
		return fmt.Sprintf("%+v", pods), ready == n && len(pods) == n
	})
	if !ok {
		t.Fatalf("%d Ready pods of %s in %s not there after %v: %s\n%s", n, selector, namespace, timeout, out,
			c.kubectl(t, "get", "events", "-A", "--sort-by=.lastTimestamp"))
	}
	return pods
}

// TestRealCluster: three lab nodes register as real Nodes and go Ready; a
// Deployment of the backend gets one Running pod per node with an address
// from that node's pod network; kube-controller-manager writes the
// Service's EndpointSlice; kube-proxy (nftables) carries the Service's
// cluster IP from a node to every pod, across nodes. After the test nothing
// of it is left in the host's namespaces (checked by startRealCluster).
func TestRealCluster(t *testing.T) {
	c := startRealCluster(t)
	t.Log(c.kubectl(t, "get", "nodes", "-o", "wide"))

	c.apply(t, backendManifest)
	pods := c.waitPodsReady(t, "default", "app=backend", 3, 3*time.Minute)
	t.Log(c.kubectl(t, "get", "pods", "-o", "wide"))
	var nodes []string
	for _, p := range pods {
		n := c.Node(p.Node)
		if n == nil {
			t.Fatalf("pod %s on %q, not a lab node", p.Name, p.Node)
		}
		nodes = append(nodes, p.Node)
		if ip, err := netip.ParseAddr(p.IP); err != nil || !n.PodCIDR.Contains(ip) {
			t.Errorf("pod %s on %s has address %q, want one in %s", p.Name, p.Node, p.IP, n.PodCIDR)
		}
	}
	slices.Sort(nodes)
	if want := []string{"node1", "node2", "node3"}; !slices.Equal(nodes, want) {
		t.Errorf("backend pods on nodes %v, want one on each of %v", nodes, want)
	}

	// The EndpointSlice is kube-controller-manager's, not written by the
	// test.
	var addrs []string
	out, ok := waitFor(time.Minute, func() (string, bool) {
		out := c.kubectl(t, "get", "endpointslices", "-l", "kubernetes.io/service-name=backend",
			"-o", `jsonpath={range .items[*]}{.metadata.labels.endpointslice\.kubernetes\.io/managed-by}{" "}{range .endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{" "}{end}{"\n"}{end}`)
		f := strings.Fields(out)
		if len(f) != 4 || f[0] != "endpointslice-controller.k8s.io" {
			return out, false
		}
		addrs = slices.Sorted(slices.Values(f[1:]))
		return out, true
	})
	if !ok {
		t.Fatalf("EndpointSlice of backend by endpointslice-controller.k8s.io with 3 ready endpoints: got %q", out)
	}
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, p.IP)
	}
	slices.Sort(podIPs)
	if !slices.Equal(addrs, podIPs) {
		t.Errorf("EndpointSlice addresses %v, want the pods' %v", addrs, podIPs)
	}

	clusterIP, err := netip.ParseAddr(strings.TrimSpace(c.kubectl(t, "get", "svc", "backend", "-o", "jsonpath={.spec.clusterIP}")))
	if err != nil {
		t.Fatalf("cluster IP of backend: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seen, out, ok := untilPodsAnswer(ctx, c.Nodes[0].Host, clusterIP, 3)
	if !ok {
		t.Fatalf("curl http://%s/ from node1 through kube-proxy did not reach all 3 pods: %s", clusterIP, out)
	}
	t.Logf("curl http://%s/ from node1 (kube-proxy, nftables) reached %v", clusterIP, seen)

	t.Run("ironlb installed from deploy/ironlb.yaml", c.ironlbInstalled)
}

// installIronlb applies deploy/ironlb.yaml as a user would, with only the
// image replaced by the one imported into the nodes (before apply, so the
// pull policy defaults to IfNotPresent as for any tagged image; nothing can
// be pulled here).
func (c *realCluster) installIronlb(t *testing.T) {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(root, "deploy", "ironlb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`(?m)^(\s+image:\s*)\S+$`)
	if n := len(images.FindAll(manifest, -1)); n != 2 {
		t.Fatalf("deploy/ironlb.yaml has %d image fields, want 2 (controller and speaker)", n)
	}
	c.apply(t, string(images.ReplaceAll(manifest, []byte("${1}"+ironlbImage))))
}

// l2Advertisement is 01-l2-first-pool.yaml's advertisement.
const l2Advertisement = `apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
`

// loadBalancerManifest exposes the backend Deployment as 03's Service does.
const loadBalancerManifest = `apiVersion: v1
kind: Service
metadata:
  name: backend-lb
  namespace: default
spec:
  type: LoadBalancer
  selector:
    app: backend
  ports:
  - port: 80
    protocol: TCP
    targetPort: 80
`

// ironlbInstalled checks ironlb installed from its own manifest: the
// controller Deployment's and the speaker DaemonSet's pods Running and
// Ready under their ServiceAccounts, the tutorial's pool and advertisement,
// and a LoadBalancer Service over the backend Deployment that gets
// EXTERNAL-IP 172.25.254.50 and answers curl from the client with every pod.
func (c *realCluster) ironlbInstalled(t *testing.T) {
	c.installIronlb(t)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n%s\n%s\nironlb pod logs:\n%s", append(args,
			c.kubectl(t, "get", "pods", "-A", "-o", "wide"),
			c.kubectl(t, "get", "events", "-n", cluster.Namespace, "--sort-by=.lastTimestamp"),
			c.kube.PodLogs(cluster.Namespace, ""))...)
	}
	for _, w := range []struct {
		selector, account string
		n                 int
	}{
		{"app.kubernetes.io/component=speaker", "speaker", 3},
		{"app.kubernetes.io/component=controller", "controller", 2},
	} {
		out, ok := waitFor(3*time.Minute, func() (string, bool) {
			pods := c.pods(t, cluster.Namespace, w.selector)
			ready := 0
			for _, p := range pods {
				if p.Phase == "Running" && p.Ready {
					ready++
				}
			}
			return fmt.Sprintf("%+v", pods), ready == w.n
		})
		if !ok {
			fail("%d Ready pods of %s: %s", w.n, w.selector, out)
		}
		accounts := c.kubectl(t, "get", "pods", "-n", cluster.Namespace, "-l", w.selector, "-o", "jsonpath={.items[*].spec.serviceAccountName}")
		if got := strings.Fields(accounts); len(got) != w.n || slices.ContainsFunc(got, func(a string) bool { return a != w.account }) {
			t.Errorf("pods of %s run as ServiceAccounts %q, want %s", w.selector, accounts, w.account)
		}
	}

	c.apply(t, manifests.Join(manifests.Pool(manifests.FirstPoolRange), l2Advertisement))
	c.apply(t, loadBalancerManifest)
	out, ok := waitFor(2*time.Minute, func() (string, bool) {
		out, err := c.env.Kubectl("get", "svc", "backend-lb")
		if err != nil {
			return err.Error(), false
		}
		ip, _ := column(out, "backend-lb", "EXTERNAL-IP")
		return out, ip == "172.25.254.50"
	})
	t.Logf("kubectl get svc backend-lb:\n%s", out)
	if !ok {
		fail("backend-lb has no EXTERNAL-IP 172.25.254.50")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vip := netip.MustParseAddr("172.25.254.50")
	seen, out, ok := untilPodsAnswer(ctx, c.Client, vip, 3)
	if !ok {
		fail("curl http://%s/ from the client did not reach all 3 backend pods: %s", vip, out)
	}
	t.Logf("curl http://%s/ from the client reached %v", vip, seen)
}

// untilPodsAnswer curls addr from h until want distinct pods have answered or
// a minute passes; it returns the pods seen and the last progress message.
func untilPodsAnswer(ctx context.Context, h *lab.Host, addr netip.Addr, want int) ([]string, string, bool) {
	var seen []string
	out, ok := waitFor(time.Minute, func() (string, bool) {
		a, err := curlFrom(ctx, h, addr)
		if err != nil {
			return err.Error(), false
		}
		if !slices.Contains(seen, a.pod) {
			seen = append(seen, a.pod)
		}
		return fmt.Sprintf("answered so far: %v", seen), len(seen) == want
	})
	return seen, out, ok
}

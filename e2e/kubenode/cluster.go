// Package kubenode turns the lab into a real Kubernetes cluster: every lab
// node runs its own containerd, kubelet and kube-proxy inside its network
// namespace, and the host runs kube-controller-manager and kube-scheduler
// beside the API server. Nodes register themselves, pods run from images
// imported into each node's containerd (nothing can be pulled), the
// EndpointSlice controller writes endpoints, and kube-proxy programs
// Services with nftables. Each component logs in as itself, under RBAC and
// the Node authorizer.
//
// The lab must be built with lab.Config{NoPods: true} (the CNI owns the
// node's pod network) and the control plane started with
// controlplane.Options{Cluster: true} on the lab's host address.
package kubenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/e2e/lab"
)

// Binaries are the cluster components hack/envtest-assets.sh builds beside
// the control plane.
var Binaries = []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"}

// Config says what to run.
type Config struct {
	Lab *lab.Lab
	Env *controlplane.Env
	// Assets is the directory with Binaries; default Env.AssetsDir.
	Assets string
	// Pause is the static pause program (e2e/pause): it holds each node's
	// mount namespace, and SandboxImage is built from it.
	Pause string
	// SandboxImage is the image reference containerd runs as every pod's
	// sandbox; it must be among Images.
	SandboxImage string
	// Images are image archives (hack/image) imported into every node.
	Images []string
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
}

// Cluster is the running cluster.
type Cluster struct {
	Nodes []*Node
	// Dir holds every node's state.
	Dir string

	cfg        Config
	before     HostState
	controller *lab.Process
	scheduler  *lab.Process
	closeOnce  sync.Once
	closeErr   error
}

// Controllers are the kube-controller-manager controllers the lab runs:
// what Deployments, DaemonSets, Services' endpoints and pods'
// ServiceAccounts need, and node lifecycle, which lifts the not-ready taint
// every new node starts with. No cloud provider.
var Controllers = []string{
	"deployment-controller", "replicaset-controller", "daemonset-controller",
	"endpointslice-controller", "serviceaccount-controller", "root-ca-certificate-publisher-controller",
	"garbage-collector-controller", "namespace-controller", "node-lifecycle-controller",
}

// Start brings the cluster up and waits until every node is Ready. On error
// everything started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Assets == "" {
		cfg.Assets = cfg.Env.AssetsDir
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Env.Cluster.CAFile == "" {
		return nil, errors.New("start cluster: the control plane was not started with Options.Cluster")
	}
	for _, b := range Binaries {
		if _, err := os.Stat(filepath.Join(cfg.Assets, b)); err != nil {
			return nil, fmt.Errorf("start cluster: %s missing in %s (run `make envtest-assets`): %w", b, cfg.Assets, err)
		}
	}
	c := &Cluster{cfg: cfg}
	// The kubelet tunes machine-wide kernel settings at start; Close puts
	// them back.
	if c.before, err = SnapshotHost(ctx); err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if c.Dir, err = os.MkdirTemp("", cfg.Lab.Prefix+"kube-"); err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	if err := c.routePods(); err != nil {
		return nil, err
	}
	if err := c.startControllers(); err != nil {
		return nil, err
	}
	// Credentials first, one at a time: the nodes start in parallel.
	proxyKubeconfig, err := cfg.Env.UserKubeconfig("system:kube-proxy")
	if err != nil {
		return nil, err
	}
	for _, ln := range cfg.Lab.Nodes {
		n := &Node{Node: ln, c: c, Dir: filepath.Join(c.Dir, ln.Name), CgroupRoot: cfg.Lab.Prefix + ln.Name,
			proxyKubeconfig: proxyKubeconfig}
		n.Socket = n.path("containerd.sock")
		if n.kubeletKubeconfig, err = cfg.Env.UserKubeconfig("system:node:"+ln.Name, "system:nodes"); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = n.start(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	cfg.Logf("kubenode: containerd, kubelet and kube-proxy started on %d nodes; waiting for Ready", len(c.Nodes))
	if err := c.WaitReady(ctx, 3*time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// routePods gives the host routes to the pod networks through the nodes,
// as a host-gw network would, so pods reach the API server on the host and
// its answers find them. The routes are on the lab's host link and go with
// it.
func (c *Cluster) routePods() error {
	link, err := netlink.LinkByName(c.cfg.Lab.Host.Iface)
	if err != nil {
		return fmt.Errorf("find %s: %w", c.cfg.Lab.Host.Iface, err)
	}
	for _, n := range c.cfg.Lab.Nodes {
		dst := &net.IPNet{IP: n.PodCIDR.Addr().AsSlice(), Mask: net.CIDRMask(n.PodCIDR.Bits(), 32)}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: n.IPv4.AsSlice()}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("route %s via %s on %s: %w", n.PodCIDR, n.IPv4, c.cfg.Lab.Host.Iface, err)
		}
	}
	return nil
}

// startControllers runs kube-controller-manager and kube-scheduler on the
// host. The controller manager gives each controller its own ServiceAccount
// credentials (use-service-account-credentials), as kubeadm clusters do.
func (c *Cluster) startControllers() error {
	env := c.cfg.Env
	kcm, err := env.UserKubeconfig("system:kube-controller-manager")
	if err != nil {
		return err
	}
	controllers := ""
	for i, name := range Controllers {
		if i > 0 {
			controllers += ","
		}
		controllers += name
	}
	c.controller, err = c.cfg.Lab.Host.StartProcess(lab.ProcessSpec{
		Label: "kube-controller-manager", Path: filepath.Join(c.cfg.Assets, "kube-controller-manager"),
		Args: []string{
			"--kubeconfig", kcm,
			"--secure-port=0",
			"--leader-elect=false",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file", env.Cluster.ServiceAccountKeyFile,
			"--root-ca-file", env.Cluster.CAFile,
			"--controllers", controllers,
		},
	})
	if err != nil {
		return err
	}
	sched, err := env.UserKubeconfig("system:kube-scheduler")
	if err != nil {
		return err
	}
	c.scheduler, err = c.cfg.Lab.Host.StartProcess(lab.ProcessSpec{
		Label: "kube-scheduler", Path: filepath.Join(c.cfg.Assets, "kube-scheduler"),
		Args: []string{"--kubeconfig", sched, "--secure-port=0", "--leader-elect=false"},
	})
	return err
}

// WaitReady waits until every node reports Ready.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	return poll(ctx, timeout, func() error {
		for _, n := range c.Nodes {
			var node corev1.Node
			if err := c.cfg.Env.Client.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			ready := false
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				return fmt.Errorf("node %s not Ready: %v", n.Name, node.Status.Conditions)
			}
			if n.kubelet != nil && n.kubelet.Err() != nil {
				return wait.ErrorInterrupted(fmt.Errorf("kubelet of %s: %v", n.Name, n.kubelet))
			}
		}
		return nil
	})
}

// Close stops every component in order and removes what the nodes made:
// containers, cgroups, state; the kernel settings the kubelet changed are
// restored. Links, routes and namespaces go with the lab. Safe to call more
// than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for _, p := range []*lab.Process{c.scheduler, c.controller} {
			if p != nil {
				errs = append(errs, p.Stop(10*time.Second))
			}
		}
		nodeErrs := make([]error, len(c.Nodes))
		var wg sync.WaitGroup
		for i, n := range c.Nodes {
			wg.Go(func() { nodeErrs[i] = n.stop() })
		}
		wg.Wait()
		errs = append(errs, nodeErrs...)
		errs = append(errs, restoreTunables(c.before))
		if c.Dir != "" {
			if err := unmountBelow(c.Dir); err != nil {
				errs = append(errs, err)
			} else if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			c.closeErr = fmt.Errorf("stop cluster: %w", err)
		}
	})
	return c.closeErr
}

// Logs is every component's log (the lab's Logs include them too).
func (c *Cluster) Logs() string { return c.cfg.Lab.Logs() }

// poll calls check until it returns nil or the timeout ends; the error says
// what was last seen.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = check()
		if wait.Interrupted(last) {
			return false, last
		}
		return last == nil, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("after %v: %w", timeout, last)
	}
	return err
}

// PodLogs returns the logs of every container of pods whose name starts
// with prefix in namespace, read from the nodes' pod log directories, so
// they are there even when a kubelet is not. Each log comes under a header
// naming node and file.
func (c *Cluster) PodLogs(namespace, prefix string) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		files, _ := filepath.Glob(n.path("kubelet/pod-logs", namespace+"_"+prefix+"*", "*", "*.log"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			rel, _ := filepath.Rel(n.path("kubelet/pod-logs"), f)
			fmt.Fprintf(&b, "===== %s %s =====\n%s", n.Name, rel, data)
		}
	}
	return b.String()
}

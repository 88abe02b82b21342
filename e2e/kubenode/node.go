package kubenode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/lab"
)

// Node is a lab node running as a real Kubernetes node: its own containerd,
// kubelet and kube-proxy, all inside the node's network namespace and one
// private mount namespace.
type Node struct {
	*lab.Node
	// Dir holds the node's state: containerd's root and state, the kubelet's
	// root, certificates and pod logs, configuration files.
	Dir string
	// Socket is the node's containerd socket.
	Socket string
	// CgroupRoot is the node's cgroup root in every hierarchy.
	CgroupRoot string

	c                 *Cluster
	kubeletKubeconfig string // system:node:<name> in system:nodes
	proxyKubeconfig   string // system:kube-proxy
	mounts            *lab.Process
	containerd        *lab.Process
	kubelet           *lab.Process
	proxy             *lab.Process
}

// Processes of a node share one mount namespace: the kubelet mounts
// volumes (the ServiceAccount token's tmpfs) that containerd must see to
// bind them into containers. The namespace is a slave of the host's, so
// nothing mounted in it appears on the host, and it disappears with its last
// process. tmpfs over /run, /var/lib and /var/log catches the paths the
// components write without asking (shim sockets, pods' network namespaces,
// CNI's cache, /var/log/containers). The holder keeps it alive between
// restarts of the components.
const holderScript = `set -e
for d in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 kubenode "$d"; done
exec "$1"`

func (n *Node) path(parts ...string) string {
	return filepath.Join(append([]string{n.Dir}, parts...)...)
}

// start brings the node up: mount namespace, cgroup root, containerd with
// the images, kubelet, kube-proxy.
func (n *Node) start(ctx context.Context) error {
	if err := n.prepare(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	if err := n.startKubelet(); err != nil {
		return err
	}
	return n.startProxy()
}

// prepare makes the node's directories, cgroup root and mount namespace.
func (n *Node) prepare(ctx context.Context) error {
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam",
		"kubelet/root", "kubelet/certs", "kubelet/pod-logs", "kubelet/volume-plugins"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	if err := createCgroupRoot(n.CgroupRoot); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	var err error
	n.mounts, err = n.c.cfg.Lab.Host.StartProcess(lab.ProcessSpec{
		Label: n.Name + "-mounts", Path: "nsenter",
		Args: []string{"--net=/run/netns/" + n.Namespace, "--", "unshare", "--mount", "--propagation", "slave", "--",
			"sh", "-c", holderScript, "holder", n.c.cfg.Pause},
	})
	if err != nil {
		return err
	}
	return poll(ctx, 10*time.Second, func() error {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", n.mounts.Pid()))
		if err != nil || exe != n.c.cfg.Pause {
			return fmt.Errorf("mount namespace holder of %s not ready (exe %q): %v", n.Name, exe, n.mounts)
		}
		return nil
	})
}

// inNode starts a component inside the node's namespaces.
func (n *Node) inNode(label, path string, args ...string) (*lab.Process, error) {
	return n.c.cfg.Lab.Host.StartProcess(lab.ProcessSpec{
		Label: n.Name + "-" + label, Path: "nsenter",
		Args: append([]string{"--target", strconv.Itoa(n.mounts.Pid()), "--mount", "--net", "--", path}, args...),
	})
}

func (n *Node) writeFile(name, content string) (string, error) {
	p := n.path(name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return "", fmt.Errorf("%s: write %s: %w", n.Name, name, err)
	}
	return p, nil
}

// containerdConfig is containerd 1.6's configuration for one node. Every
// path is the node's; restrict_oom_score_adj because this machine's root
// lacks CAP_SYS_RESOURCE and runc would fail to lower a sandbox's
// oom_score_adj; plugins that would touch the host (opt) or need absent
// kernel features are off or moved.
func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, n.path("containerd/root"), n.path("containerd/state"), n.Socket, n.Socket+".ttrpc",
		n.path("containerd/opt"), n.c.cfg.SandboxImage, n.path("cni/net.d"))
}

// cniConfig: the bridge plugin with host-local addresses from the node's
// pod network, gateway 10.244.N.1 on the bridge. No masquerade: pods keep
// their addresses across nodes, which the lab's host-gw routes carry.
func (n *Node) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "lab",
  "plugins": [{
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": %q,
      "ranges": [[{"subnet": %q, "gateway": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
`, n.path("cni/ipam"), n.PodCIDR.String(), n.Gateway.String())
}

func (n *Node) startContainerd(ctx context.Context) error {
	if _, err := n.writeFile("cni/net.d/10-lab.conflist", n.cniConfig()); err != nil {
		return err
	}
	cfg, err := n.writeFile("containerd.toml", n.containerdConfig())
	if err != nil {
		return err
	}
	if n.containerd, err = n.inNode("containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, func() error {
		_, err := n.ctr(ctx, "version")
		return err
	}); err != nil {
		return fmt.Errorf("%s: containerd: %w", n.Name, err)
	}
	for _, image := range n.c.cfg.Images {
		if _, err := n.ctr(ctx, "images", "import", image); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
	}
	return nil
}

// ctr runs ctr against the node's containerd in Kubernetes' namespace.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.Socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// kubeletConfig: the settings this machine needs (cgroup v1, cgroupfs, swap
// on, no CAP_SYS_RESOURCE) and the node's own paths. Only the API server's
// client certificate gets in (logs, exec); anyone who has it may do
// anything, as in a kubeadm cluster's kubelet with AlwaysAllow. Image garbage
// collection is off because images cannot be pulled back; eviction
// thresholds are low so a busy shared disk does not taint the node.
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: %q
address: %q
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %q
authorization:
  mode: AlwaysAllow
podLogsDir: %q
volumePluginDir: %q
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
nodeStatusUpdateFrequency: 4s
`, "/"+n.CgroupRoot, "unix://"+n.Socket, n.IPv4.String(), n.c.cfg.Env.Cluster.KubeletClientCAFile,
		n.path("kubelet/pod-logs"), n.path("kubelet/volume-plugins"))
}

func (n *Node) startKubelet() error {
	cfg, err := n.writeFile("kubelet.yaml", n.kubeletConfig())
	if err != nil {
		return err
	}
	n.kubelet, err = n.inNode("kubelet", filepath.Join(n.c.cfg.Assets, "kubelet"),
		"--config", cfg,
		"--kubeconfig", n.kubeletKubeconfig,
		"--root-dir", n.path("kubelet/root"),
		"--cert-dir", n.path("kubelet/certs"),
		"--hostname-override", n.Name,
		"--node-ip", n.IPv4.String(),
		"--node-labels", "topology.kubernetes.io/zone="+cluster.Zone(n.Number),
	)
	return err
}

// proxyConfig: kube-proxy in nftables mode (this kernel has no IPVS);
// conntrack table sizes are machine-wide settings, left alone.
func (n *Node) proxyConfig(kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: %q
clusterCIDR: 10.244.0.0/16
oomScoreAdj: 0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: %q
conntrack:
  maxPerCore: 0
  min: 0
`, n.Name, kubeconfig)
}

func (n *Node) startProxy() error {
	cfg, err := n.writeFile("kube-proxy.yaml", n.proxyConfig(n.proxyKubeconfig))
	if err != nil {
		return err
	}
	n.proxy, err = n.inNode("kube-proxy", filepath.Join(n.c.cfg.Assets, "kube-proxy"), "--config", cfg)
	return err
}

// stop takes the node down in the order a clean shutdown needs: no kubelet
// restarting containers, then every container (they live in the node's
// cgroup root and in pod namespaces the lab does not know), then containerd
// and its shims, then the mount namespace, then the cgroups.
func (n *Node) stop() error {
	var errs []error
	for _, p := range []*lab.Process{n.proxy, n.kubelet} {
		if p != nil {
			errs = append(errs, p.Stop(10*time.Second))
		}
	}
	errs = append(errs, killCgroup(n.CgroupRoot, 20*time.Second))
	if n.containerd != nil {
		errs = append(errs, n.containerd.Stop(10*time.Second))
	}
	if n.mounts != nil {
		// Shims left by containerd share the holder's mount namespace.
		errs = append(errs, killMountNamespace(n.mounts.Pid(), 10*time.Second))
		errs = append(errs, n.mounts.Stop(5*time.Second))
	}
	errs = append(errs, removeCgroupRoot(n.CgroupRoot))
	return errors.Join(errs...)
}

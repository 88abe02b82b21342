package kubenode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// HostState is what a real node could leave behind in the machine's own
// namespaces: links (a CNI bridge, veths), firewall rules (the kubelet's and
// kube-proxy's chains), mounts (volumes, sandboxes' /dev/shm, container root
// file systems, pods' network namespaces), cgroups and the kernel settings
// the kubelet tunes at start.
type HostState struct {
	Links     []string
	Nftables  string
	Iptables  string
	Mounts    []string
	Cgroups   []string
	Tunables  map[string]string
	Namespace []string // entries of /run/netns
}

// kernelTunables are the machine-wide settings the kubelet writes at start
// (protectKernelDefaults=false); they are not per network namespace.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// othersOwn tells names other tests of this machine may add or remove at
// any time: labs ("ilb<pid><letter>-", which also wait for each other) and
// the packages' own namespace tests ("ironlb-..."). A real node's leftovers
// have other names: cni0, veth..., cni-<uuid> network namespaces.
func othersOwn(name string) bool {
	return strings.HasPrefix(name, "ilb") || strings.HasPrefix(name, "ironlb-")
}

// SnapshotHost reads the host's state.
func SnapshotHost(ctx context.Context) (HostState, error) {
	var s HostState
	links, err := netlink.LinkList()
	if err != nil {
		return s, fmt.Errorf("list host links: %w", err)
	}
	for _, l := range links {
		if !othersOwn(l.Attrs().Name) {
			s.Links = append(s.Links, l.Attrs().Name)
		}
	}
	slices.Sort(s.Links)
	if s.Nftables, err = output(ctx, "nft", "list", "ruleset"); err != nil {
		return s, err
	}
	if s.Iptables, err = output(ctx, "iptables-save"); err != nil {
		return s, err
	}
	s.Nftables = counters.ReplaceAllString(s.Nftables, "")
	s.Iptables = counters.ReplaceAllString(dropComments(s.Iptables), "")
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return s, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Mount point and what is mounted, without the ids that change.
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || strings.HasPrefix(fields[4], "/run/netns/") && othersOwn(strings.TrimPrefix(fields[4], "/run/netns/")) {
			continue
		}
		s.Mounts = append(s.Mounts, fields[3]+" "+fields[4])
	}
	slices.Sort(s.Mounts)
	dirs, err := cgroupHierarchies()
	if err != nil {
		return s, err
	}
	for _, h := range dirs {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() {
				s.Cgroups = append(s.Cgroups, h+"/"+e.Name())
			}
		}
	}
	s.Tunables = map[string]string{}
	for _, k := range kernelTunables {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return s, fmt.Errorf("read %s: %w", k, err)
		}
		s.Tunables[k] = strings.TrimSpace(string(b))
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !othersOwn(e.Name()) {
			s.Namespace = append(s.Namespace, e.Name())
		}
	}
	return s, nil
}

// Diff lists what after has that s had not (removals are other tests'
// doing), one line per difference; empty means nothing was left behind.
func (s HostState) Diff(after HostState) []string {
	var d []string
	d = append(d, listDiff("link", s.Links, after.Links)...)
	d = append(d, listDiff("mount", s.Mounts, after.Mounts)...)
	d = append(d, listDiff("cgroup", s.Cgroups, after.Cgroups)...)
	d = append(d, listDiff("network namespace", s.Namespace, after.Namespace)...)
	if s.Nftables != after.Nftables {
		d = append(d, fmt.Sprintf("nftables ruleset changed:\nbefore:\n%s\nafter:\n%s", s.Nftables, after.Nftables))
	}
	if s.Iptables != after.Iptables {
		d = append(d, fmt.Sprintf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", s.Iptables, after.Iptables))
	}
	for _, k := range kernelTunables {
		if s.Tunables[k] != after.Tunables[k] {
			d = append(d, fmt.Sprintf("sysctl %s: %s, was %s", k, after.Tunables[k], s.Tunables[k]))
		}
	}
	return d
}

// restoreTunables writes back the kernel settings of before.
func restoreTunables(before HostState) error {
	for _, k := range kernelTunables {
		v, ok := before.Tunables[k]
		if !ok {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("restore sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}

func listDiff(what string, before, after []string) []string {
	var d []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			d = append(d, fmt.Sprintf("%s left: %s", what, a))
		}
	}
	return d
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// counters match the packet counts in rule listings, which traffic of the
// host changes while a test runs.
var counters = regexp.MustCompile(`\[[0-9]+:[0-9]+\]|packets [0-9]+ bytes [0-9]+`)

// dropComments removes iptables-save's comment lines, which carry the time.
func dropComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Command demo is what `make demo` runs: it brings up a network-namespace lab
// with a real Kubernetes control plane on this machine and walks through the
// user's tutorial with ironlb, printing each command a user would type and
// its real output. It needs root. Every step is numbered; the exit status is
// 0 only when all of them succeeded, and everything it started is removed at
// the end, on failure, and on Ctrl-C. With --keep the lab stays up until
// Ctrl-C, for exploring it by hand.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/e2e/frr"
	"github.com/ironlb/ironlb/e2e/lab"
)

func main() {
	// envtest logs through controller-runtime; the scenarios report what
	// matters themselves.
	ctrllog.SetLogger(logr.Discard())
	keep := flag.Bool("keep", false, "leave the lab and control plane up after the tour, until Ctrl-C")
	nodes := flag.Int("nodes", 3, "number of lab nodes")
	bgpMode := flag.Bool("bgp", false, "the tour in BGP mode: FRR on the lab router peers with the speakers")
	sweep := flag.Bool("sweep", false, "only remove namespaces and links left by labs whose process died, then exit")
	flag.Parse()
	if *sweep {
		if err := lab.SweepStale(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	// The first Ctrl-C cancels the tour; later ones are only acknowledged,
	// so teardown always runs to the end.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		first := true
		for s := range sigs {
			if first {
				fmt.Printf("\n%s: stopping and tearing everything down\n", s)
				cancel()
				first = false
				continue
			}
			fmt.Println("still tearing down, please wait")
		}
	}()

	d := &demo{out: os.Stdout, nodes: *nodes, keep: *keep, bgp: *bgpMode}
	code := d.run(ctx)
	os.Exit(code)
}

// step is one numbered stage of the tour.
type step struct {
	name string
	run  func(ctx context.Context) error
}

type demo struct {
	out   io.Writer
	nodes int
	keep  bool
	// bgp runs bgpSteps (bgp.go) instead of the layer-2 tour.
	bgp bool
	frr *frr.Router

	binDir     string
	ironlb     string
	backend    string
	lab        *lab.Lab
	env        *controlplane.Env
	controller *lab.Process
	speakers   map[string]*lab.Process
	owner      string
}

func (d *demo) steps() []step {
	if d.bgp {
		return d.bgpSteps()
	}
	return []step{
		{"Install missing tools", d.installTools},
		{"Get the Kubernetes control plane binaries", d.controlPlaneAssets},
		{"Build ironlb", d.build},
		{"Bring up the network lab", d.bringUpLab},
		{"Start the control plane and the ironlb controller", d.startCluster},
		{"Apply the address pool and the L2 advertisement", d.applyPool},
		{"Apply the Service and watch it get its address", d.applyService},
		{"List the address pools", d.listPools},
		{"Start a speaker on every node and find the address's owner", d.startSpeakers},
		{"curl the Service through its address", d.curlService},
		{"Kill the owner's speaker and keep curling", d.failover},
	}
}

func (d *demo) run(ctx context.Context) (code int) {
	fmt.Fprintln(d.out, "ironlb demo: a bare-metal LoadBalancer, on this machine, in network namespaces")
	if os.Geteuid() != 0 {
		fmt.Fprintln(d.out, "the demo needs root (it creates network namespaces): run it as root, e.g. sudo make demo")
		return 1
	}
	defer func() {
		if err := d.teardown(); err != nil {
			fmt.Fprintf(d.out, "teardown: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()

	steps := d.steps()
	for i, s := range steps {
		fmt.Fprintf(d.out, "\n[%d/%d] %s\n", i+1, len(steps), s.name)
		start := time.Now()
		err := s.run(ctx)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			// Ctrl-C also reaches the step's child processes (kubectl, go
			// build), which then fail on their own: that is an interruption.
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				fmt.Fprintf(d.out, "\ndemo interrupted at step %d (%s)\n", i+1, s.name)
				return 130
			}
			fmt.Fprintf(d.out, "      FAILED: %v\n", err)
			if d.lab != nil {
				fmt.Fprintf(d.out, "\nprocess logs:\n%s", indent(d.lab.Logs()))
			}
			fmt.Fprintf(d.out, "\ndemo failed at step %d (%s)\n", i+1, s.name)
			return 1
		}
		fmt.Fprintf(d.out, "      ok (%s)\n", roundDuration(time.Since(start)))
	}
	fmt.Fprintf(d.out, "\nevery step succeeded\n")
	if d.keep {
		d.printKeepHelp()
		<-ctx.Done()
	}
	return 0
}

func (d *demo) teardown() error {
	if d.lab == nil && d.env == nil && d.binDir == "" {
		return nil
	}
	fmt.Fprintln(d.out, "\ntearing down: processes, control plane, namespaces")
	var errs []error
	for _, p := range d.speakers {
		errs = append(errs, p.Stop(10*time.Second))
	}
	if d.controller != nil {
		errs = append(errs, d.controller.Stop(10*time.Second))
	}
	if d.frr != nil {
		d.frr.Close()
	}
	if d.env != nil {
		errs = append(errs, d.env.Stop())
	}
	if d.lab != nil {
		errs = append(errs, d.lab.Close())
	}
	if d.binDir != "" {
		errs = append(errs, os.RemoveAll(d.binDir))
	}
	return errors.Join(errs...)
}

// --- output helpers -------------------------------------------------------

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(strings.TrimRight(s, "\n")) {
		b.WriteString("      ")
		b.WriteString(line)
	}
	if s != "" {
		b.WriteByte('\n')
	}
	return b.String()
}

// say prints an explanation under the current step.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "      %s\n", fmt.Sprintf(format, args...))
}

// command prints a command as the user would type it and then its output.
func (d *demo) command(cmdline, output string) {
	fmt.Fprintf(d.out, "      $ %s\n", cmdline)
	fmt.Fprint(d.out, indent(output))
}

// kubectl runs kubectl against the lab's control plane and shows it as the
// plain `kubectl ...` a user types with KUBECONFIG set.
func (d *demo) kubectl(args ...string) (string, error) {
	out, err := d.env.Kubectl(args...)
	d.command("kubectl "+strings.Join(args, " "), out)
	return out, err
}

// --- steps ----------------------------------------------------------------

// tools maps each program the lab scenarios use to its Debian package.
var tools = []struct{ binary, pkg string }{
	{"ip", "iproute2"},
	{"nft", "nftables"},
	{"arping", "iputils-arping"},
	{"curl", "curl"},
	{"vtysh", "frr"},
	{"bird", "bird2"},
}

func (d *demo) installTools(ctx context.Context) error {
	var missing, present []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.binary); err != nil {
			missing = append(missing, t.pkg)
		} else {
			present = append(present, t.binary)
		}
	}
	if len(present) > 0 {
		d.say("present: %s", strings.Join(present, ", "))
	}
	if len(missing) == 0 {
		return nil
	}
	args := append([]string{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends"}, missing...)
	d.say("missing packages: %s", strings.Join(missing, ", "))
	out, err := runQuiet(ctx, nil, "apt-get", args...)
	if err != nil {
		// The package lists may be stale or absent on a fresh machine.
		if _, uerr := runQuiet(ctx, nil, "apt-get", "-o", "DPkg::Lock::Timeout=600", "update"); uerr != nil {
			return fmt.Errorf("apt-get update: %w", uerr)
		}
		out, err = runQuiet(ctx, nil, "apt-get", args...)
	}
	d.command("apt-get install -y "+strings.Join(missing, " "), tail(out, 3))
	return err
}

func (d *demo) controlPlaneAssets(ctx context.Context) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	// The script's progress goes to stderr; a cold build takes a while, so
	// the user sees it live.
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "envtest-assets.sh"))
	cmd.Dir = root
	cmd.Stderr = prefixWriter{d.out}
	d.say("$ bash hack/envtest-assets.sh")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("hack/envtest-assets.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir := lines[len(lines)-1]
	d.say("%s", dir)
	return os.Setenv("KUBEBUILDER_ASSETS", dir)
}

func (d *demo) build(ctx context.Context) error {
	var err error
	if d.binDir, err = os.MkdirTemp("", "ironlb-demo-bin-"); err != nil {
		return err
	}
	d.say("$ go build -o %s .", filepath.Join(d.binDir, "ironlb"))
	if d.ironlb, err = cluster.Build(ctx, d.binDir, "github.com/ironlb/ironlb", "ironlb"); err != nil {
		return err
	}
	d.say("(and the lab's test backend, e2e/backend)")
	d.backend, err = cluster.Build(ctx, d.binDir, "github.com/ironlb/ironlb/e2e/backend", "backend")
	return err
}

func (d *demo) bringUpLab(ctx context.Context) error {
	l, err := lab.New(ctx, lab.Config{Nodes: d.nodes, Backend: d.backend, Waiting: func() {
		d.say("another lab on this machine holds 172.25.254.254 (a test run?); waiting for it to finish")
	}})
	if err != nil {
		return err
	}
	d.lab = l
	d.say("segment 172.25.254.0/24 and fd00:254::/64 on a bridge (namespace %s)", l.Bridge.Namespace)
	d.say("%-8s %-16s %-16s namespace %s", "router", l.Router.IPv4, l.Router.IPv6, l.Router.Namespace)
	for _, n := range l.Nodes {
		d.say("%-8s %-16s %-16s namespace %s, pod %s at %s", n.Name, n.IPv4, n.IPv6, n.Namespace, n.Pod.Name, n.Pod.IPv4)
	}
	d.say("%-8s %-16s %-16s namespace %s", "client", l.Client.IPv4, l.Client.IPv6, l.Client.Namespace)
	d.say("%-8s %-16s %-16s this machine, link %s (control plane)", "host", l.Host.IPv4, l.Host.IPv6, l.Host.Iface)
	d.say("lab up in %s; every pod runs a backend answering with its name", roundDuration(l.BringUp))
	return nil
}

func (d *demo) startCluster(ctx context.Context) error {
	env, err := controlplane.StartWith(controlplane.Options{BindAddress: d.lab.Host.IPv4.String()})
	if err != nil {
		return fmt.Errorf("start control plane on %s: %w", d.lab.Host.IPv4, err)
	}
	d.env = env
	d.say("kube-apiserver and etcd listen on %s; the CRDs are installed", d.lab.Host.IPv4)
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := cluster.Register(ctx, env.Client, d.lab); err != nil {
		return err
	}
	d.say("no kubelets in the lab: Node objects are written for the lab nodes")
	if _, err := d.kubectl("get", "nodes", "-o", "wide", "-L", "topology.kubernetes.io/zone"); err != nil {
		return err
	}
	if d.controller, err = cluster.StartController(d.lab, env, d.ironlb); err != nil {
		return err
	}
	d.say("$ ironlb controller --kubeconfig $KUBECONFIG --leader-elect=false ... (running on the host, log %s)", d.controller.LogPath)
	return nil
}

// applyExample applies one of the example manifests users apply, unchanged,
// and shows it with the path a user types from the repository root.
func (d *demo) applyExample(name string) error {
	dir, err := controlplane.ExamplesDir()
	if err != nil {
		return err
	}
	out, err := d.env.Kubectl("apply", "-f", filepath.Join(dir, name))
	d.command("kubectl apply -f examples/"+name, out)
	return err
}

func (d *demo) applyPool(ctx context.Context) error {
	return d.applyExample("01-l2-first-pool.yaml")
}

func (d *demo) applyService(ctx context.Context) error {
	// A watch started before the Service exists shows every state it goes
	// through, the way a user watching their terminal would see it.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch := exec.CommandContext(watchCtx, filepath.Join(d.env.AssetsDir, "kubectl"), "--kubeconfig", d.env.Kubeconfig, "get", "svc", "--watch")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		return err
	}
	if err := watch.Start(); err != nil {
		return fmt.Errorf("kubectl get svc --watch: %w", err)
	}
	defer func() { stopWatch(); _ = watch.Wait() }()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var seen []string
	next := func(timeout time.Duration) (string, error) {
		select {
		case line, ok := <-lines:
			if !ok {
				return "", errors.New("kubectl get svc --watch ended")
			}
			seen = append(seen, line)
			return line, nil
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(timeout):
			return "", fmt.Errorf("no change within %s; seen so far:\n%s", timeout, strings.Join(seen, "\n"))
		}
	}
	// The header and the kubernetes Service mean the watch is established.
	for {
		line, err := next(30 * time.Second)
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "kubernetes ") {
			break
		}
	}

	applied := time.Now()
	if err := d.applyExample("03-service-loadbalancer.yaml"); err != nil {
		return err
	}
	d.say("$ kubectl get svc --watch      # started before the apply, in another terminal")
	for _, l := range seen {
		d.say("%s", l)
	}
	const want = "172.25.254.50"
	for {
		line, err := next(time.Minute)
		if err != nil {
			return fmt.Errorf("dhj-service never got %s: %w", want, err)
		}
		d.say("%s", line)
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "dhj-service" && f[3] == want {
			break
		}
	}
	d.say("(address seen %s after `kubectl apply` started)", time.Since(applied).Round(time.Millisecond))

	d.say("no kubelet runs the Deployment's pods: the lab's pods stand in, listed in an EndpointSlice")
	if err := cluster.WriteEndpoints(ctx, d.env.Client, "default", "dhj-service", d.lab.Nodes,
		[]cluster.Port{{Port: 80, Protocol: corev1.ProtocolTCP}}); err != nil {
		return err
	}
	if _, err := d.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=dhj-service"); err != nil {
		return err
	}
	_, err = d.kubectl("get", "svc", "dhj-service")
	return err
}

func (d *demo) listPools(ctx context.Context) error {
	_, err := d.kubectl("get", "ipaddresspools", "-A")
	return err
}

func (d *demo) printKeepHelp() {
	l := d.lab
	node, client := l.Nodes[0], l.Client
	pod := l.Nodes[len(l.Nodes)-1].Pod
	rows := [][2]string{
		{"export KUBECONFIG=" + d.env.Kubeconfig, ""},
		{"alias kubectl=" + filepath.Join(d.env.AssetsDir, "kubectl"), "kubectl of the control plane's version"},
		{"kubectl get svc,ipaddresspools,l2advertisements -A", ""},
		{"ip netns list | grep " + l.Prefix, "the lab's namespaces"},
		{"ip netns exec " + node.Namespace + " ip -br addr", "a node's addresses"},
		{"ip netns exec " + node.Namespace + " curl -s http://" + pod.IPv4.String() + "/", pod.Name + "'s backend, from " + node.Name},
		{"ip netns exec " + client.Namespace + " arping -c 2 -I eth0 " + node.IPv4.String(), "ARP from the client"},
		{"ip netns exec " + client.Namespace + " bash", "a shell on the client"},
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	fmt.Fprintf(d.out, "\nthe lab stays up until you press Ctrl-C. In another terminal:\n\n")
	for _, r := range rows {
		if r[1] == "" {
			fmt.Fprintf(d.out, "  %s\n", r[0])
			continue
		}
		fmt.Fprintf(d.out, "  %-*s   # %s\n", width, r[0], r[1])
	}
	fmt.Fprintf(d.out, "\nprocess logs: %s\n", l.LogDir)
}

const serviceAddr = "172.25.254.50"

// startSpeaker starts n's speaker in n's namespace, as the DaemonSet runs
// it on the host network, and records it in d.speakers.
func (d *demo) startSpeaker(n *lab.Node) (*lab.Process, error) {
	p, err := n.StartProcess(lab.ProcessSpec{Label: "speaker", Path: d.ironlb, Args: []string{"speaker",
		"--node-name", n.Name, "--kubeconfig", d.env.Kubeconfig,
		"--metrics-bind-address=0", "--health-probe-bind-address=0"}})
	if err != nil {
		return nil, err
	}
	if d.speakers == nil {
		d.speakers = map[string]*lab.Process{}
	}
	d.speakers[n.Name] = p
	return p, nil
}

func (d *demo) startSpeakers(ctx context.Context) error {
	for _, n := range d.lab.Nodes {
		p, err := d.startSpeaker(n)
		if err != nil {
			return err
		}
		d.say("$ ironlb speaker --node-name %s ...   (in %s's namespace, as the DaemonSet runs it on the host network; log %s)", n.Name, n.Name, p.LogPath)
	}
	d.say("every speaker computes the same owner for %s; the owner answers ARP for it and forwards its traffic (nftables: this kernel has no IPVS)", serviceAddr)
	var out string
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		out, err = d.env.Kubectl("get", "servicel2statuses", "-A", "-o", "jsonpath={range .items[*]}{.status.node}{\"\\n\"}{end}")
		if nodes := strings.Fields(out); err == nil && len(nodes) == 1 {
			d.owner = nodes[0]
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no single owner of %s within a minute: %q", serviceAddr, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := d.kubectl("get", "servicel2statuses", "-A"); err != nil {
		return err
	}
	c := d.lab.Client
	out, err := c.Exec(ctx, "arping", "-c", "2", "-I", c.Iface, serviceAddr)
	d.command(fmt.Sprintf("ip netns exec %s arping -c 2 -I %s %s   # from the client", c.Namespace, c.Iface, serviceAddr), out)
	if err != nil {
		return err
	}
	n := d.lab.Node(d.owner)
	out, err = n.Exec(ctx, "ip", "-br", "link", "show", n.Iface)
	d.command(fmt.Sprintf("ip netns exec %s ip -br link show %s   # the owner's MAC, the one that answered", n.Namespace, n.Iface), out)
	return err
}

// curl asks for http://<service address>/ from the client; the backend
// answers with its pod's name and the source address it saw.
func (d *demo) curl(ctx context.Context) (string, error) {
	return d.lab.Client.Exec(ctx, "curl", "-s", "--max-time", "2", "http://"+serviceAddr+"/")
}

func (d *demo) curlService(ctx context.Context) error {
	d.say("ipMode Proxy tells kube-proxy to leave the address to ironlb's forwarder:")
	if _, err := d.kubectl("get", "svc", "dhj-service", "-o", "jsonpath={.status.loadBalancer.ingress}"); err != nil {
		return err
	}
	pods := map[string]bool{}
	for range 3 {
		out, err := d.curl(ctx)
		d.command(fmt.Sprintf("ip netns exec %s curl -s http://%s/", d.lab.Client.Namespace, serviceAddr), out)
		if err != nil {
			return err
		}
		if f := strings.Fields(out); len(f) > 0 {
			pods[f[0]] = true
		}
	}
	d.say("%d different pods answered (scheduler rr); each saw %s's address as the client: the forwarder masquerades (externalTrafficPolicy Cluster)", len(pods), d.owner)
	if len(pods) < 2 {
		return fmt.Errorf("every request went to the same pod; want them spread")
	}
	return nil
}

func (d *demo) failover(ctx context.Context) error {
	owner := d.lab.Node(d.owner)
	d.say("$ kill -9 <speaker of %s>      # a crash: no goodbye to the other speakers", d.owner)
	d.say("(%s's forwarding rules stay, so requests the client still sends there succeed; what counts is the first answer through the new owner)", d.owner)
	start := time.Now()
	d.speakers[d.owner].Kill()
	var failed int
	for {
		out, err := d.curl(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			failed++
		} else if f := strings.Fields(out); len(f) == 2 {
			// The new owner masquerades with its own address; answers still
			// forwarded by the dead speaker's node (its rules stay) do not
			// count.
			from, _, _ := strings.Cut(f[1], ":")
			if from != owner.IPv4.String() && from != owner.Gateway.String() {
				d.say("first answer through the new owner %s after %s (%d requests failed meanwhile):", d.nodeByAddr(from), roundDuration(time.Since(start)), failed)
				d.command(fmt.Sprintf("ip netns exec %s curl -s http://%s/", d.lab.Client.Namespace, serviceAddr), out)
				break
			}
		}
		if time.Since(start) > time.Minute {
			return fmt.Errorf("a minute after the kill, no answer through another node")
		}
	}
	_, err := d.kubectl("get", "servicel2statuses", "-A")
	return err
}

func (d *demo) nodeByAddr(a string) string {
	for _, n := range d.lab.Nodes {
		if a == n.IPv4.String() || a == n.Gateway.String() {
			return n.Name
		}
	}
	return a
}

// --- process helpers ------------------------------------------------------

// runQuiet runs a command and returns its combined output.
func runQuiet(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(string(out), 10))
	}
	return string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// prefixWriter indents a child's live output under the current step.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, indent(string(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}

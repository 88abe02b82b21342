// Command benchcontroller measures how long `ironlb controller` takes to give
// N LoadBalancer Services an address against the real test API server, and
// compares it with a bare client that makes the same writes (create the
// Service, then one status patch carrying the address and the
// ip-allocated-from-pool annotation) with the same parallelism.
//
// Each phase runs on a control plane of its own, started empty: the API
// server's cost of creating a Service grows with the number of Services it
// already holds (its ClusterIP allocator counts every allocated address on
// each allocation), so a phase that ran after the other's N Services would
// be measured against a slower server. The last line it prints is
//
//	controller-assign n=N seconds=X bare-seconds=Y ratio=R rss-mib=M
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

func main() {
	n := flag.Int("n", 5000, "number of Services")
	workers := flag.Int("workers", 4, "parallel writers, for the creator and for the bare client")
	extra := flag.String("controller-flags", "", "extra flags for `ironlb controller`, space separated")
	flag.Parse()
	// The control plane's client logs nothing worth reading here.
	ctrllog.SetLogger(logr.Discard())
	if err := run(*n, *workers, strings.Fields(*extra)); err != nil {
		log.Fatal(err)
	}
}

func run(n, workers int, extra []string) error {
	bare, err := barePhase(n, workers)
	if err != nil {
		return fmt.Errorf("bare client: %w", err)
	}
	return controllerPhase(n, workers, extra, bare)
}

// startSeeded starts an empty control plane with the benchmark's
// namespaces and its one pool.
func startSeeded(ctx context.Context) (*controlplane.Env, error) {
	env, err := controlplane.StartWith(controlplane.Options{})
	if err != nil {
		return nil, err
	}
	c := env.Client
	for _, name := range []string{"metallb-system", "bench"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			env.Stop()
			return nil, err
		}
	}
	if err := c.Create(ctx, &v1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "metallb-system"},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []string{"172.20.0.0/16"}},
	}); err != nil {
		env.Stop()
		return nil, err
	}
	return env, nil
}

// barePhase makes the controller's writes itself: the floor the controller
// is compared with.
func barePhase(n, workers int) (time.Duration, error) {
	ctx := context.Background()
	env, err := startSeeded(ctx)
	if err != nil {
		return 0, err
	}
	defer env.Stop()
	c := env.Client
	bareClass := "bench.example/bare"
	start := time.Now()
	err = parallel(n, workers, func(i int) error {
		s := service("bench", i)
		s.Spec.LoadBalancerClass = &bareClass
		if err := c.Create(ctx, s); err != nil {
			return err
		}
		orig := s.DeepCopy()
		vip := corev1.LoadBalancerIPModeVIP
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("172.20.%d.%d", i/256, i%256), IPMode: &vip}}
		s.Annotations = map[string]string{"metallb.io/ip-allocated-from-pool": "bench"}
		return c.Status().Patch(ctx, s, client.MergeFrom(orig))
	})
	return time.Since(start), err
}

func controllerPhase(n, workers int, extra []string, bare time.Duration) error {
	ctx := context.Background()
	bin, err := buildIronlb()
	if err != nil {
		return err
	}
	env, err := startSeeded(ctx)
	if err != nil {
		return err
	}
	defer env.Stop()
	args := append([]string{"controller", "--kubeconfig", env.Kubeconfig, "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=error"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	start := time.Now()
	if err := parallel(n, workers, func(i int) error { return env.Client.Create(ctx, service("bench", i)) }); err != nil {
		return fmt.Errorf("create services: %w", err)
	}
	created := time.Since(start)
	if err := waitAssigned(ctx, env, n, start); err != nil {
		return err
	}
	took := time.Since(start)
	rss := peakRSSMiB(cmd.Process.Pid)
	cpu := cpuSeconds(cmd.Process.Pid)
	fmt.Fprintf(os.Stderr, "controller phase: services created after %.2fs, all assigned after %.2fs\n", created.Seconds(), took.Seconds())
	fmt.Printf("controller-assign n=%d seconds=%.2f bare-seconds=%.2f ratio=%.2f rss-mib=%.1f cpu-seconds=%.1f\n",
		n, took.Seconds(), bare.Seconds(), took.Seconds()/bare.Seconds(), rss, cpu)
	return nil
}

// waitAssigned watches the bench namespace until n Services carry an
// address and the pool annotation. A watch, not a polling list: listing
// thousands of Services in a loop would load the API server being measured.
func waitAssigned(ctx context.Context, env *controlplane.Env, n int, start time.Time) error {
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	w, err := wc.Watch(ctx, &corev1.ServiceList{}, client.InNamespace("bench"))
	if err != nil {
		return err
	}
	defer w.Stop()
	done := map[string]bool{}
	for ev := range w.ResultChan() {
		s, ok := ev.Object.(*corev1.Service)
		if !ok {
			continue
		}
		if len(s.Status.LoadBalancer.Ingress) == 1 && s.Annotations["metallb.io/ip-allocated-from-pool"] != "" {
			done[s.Name] = true
		}
		if len(done) == n {
			return nil
		}
	}
	return fmt.Errorf("only %d of %d services assigned after %v", len(done), n, time.Since(start).Round(time.Second))
}

func service(namespace string, i int) *corev1.Service {
	noNodePorts := false // 5,000 Services would exhaust the NodePort range
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%05d", i), Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: &noNodePorts,
			Selector:                      map[string]string{"app": "bench"},
			Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(n, workers int, fn func(int) error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func buildIronlb() (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(os.TempDir(), "ironlb-bench")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build ironlb: %w: %s", err, out)
	}
	return bin, nil
}

// cpuSeconds reads the process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	var utime, stime float64
	fmt.Sscanf(fields[11], "%f", &utime)
	fmt.Sscanf(fields[12], "%f", &stime)
	return (utime + stime) / 100 // USER_HZ
}

// peakRSSMiB reads the process's high-water resident set size.
func peakRSSMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

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
// be measured against a slower server. The phases alternate for -rounds
// rounds; the last line it prints gives the medians:
//
//	controller-assign n=N seconds=X bare-seconds=Y ratio=R rss-mib=M cpu-seconds=C
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

func main() {
	n := flag.Int("n", 5000, "number of Services")
	workers := flag.Int("workers", 4, "parallel writers, for the creator and for the bare client")
	rounds := flag.Int("rounds", 3, "bare and controller phases to run, alternating; the last line gives the medians")
	extra := flag.String("controller-flags", "", "extra flags for `ironlb controller`, space separated")
	flag.StringVar(&apiserverProfile, "apiserver-profile", "", "write a CPU profile of the API server during the controller phase to this file")
	flag.Parse()
	// The control plane's client logs nothing worth reading here.
	ctrllog.SetLogger(logr.Discard())
	if err := run(*n, *workers, *rounds, strings.Fields(*extra)); err != nil {
		log.Fatal(err)
	}
}

// apiserverProfile, when set, names the file for the API server's CPU
// profile of the controller phase.
var apiserverProfile string

func run(n, workers, rounds int, extra []string) error {
	bin, err := buildIronlb()
	if err != nil {
		return err
	}
	// Alternating rounds, so that a slow spell of a shared machine weighs
	// on both sides rather than on one.
	var bares, controlled []float64
	var last controllerRun
	for r := 1; r <= max(rounds, 1); r++ {
		bare, err := barePhase(n, workers)
		if err != nil {
			return fmt.Errorf("bare client: %w", err)
		}
		if last, err = controllerPhase(bin, n, workers, extra); err != nil {
			return err
		}
		bares, controlled = append(bares, bare.Seconds()), append(controlled, last.took.Seconds())
		fmt.Fprintf(os.Stderr, "round %d: bare %.2fs; controller: services created after %.2fs, all assigned after %.2fs (ratio %.2f)\n",
			r, bare.Seconds(), last.created.Seconds(), last.took.Seconds(), last.took.Seconds()/bare.Seconds())
	}
	took, bare := median(controlled), median(bares)
	fmt.Printf("controller-assign n=%d seconds=%.2f bare-seconds=%.2f ratio=%.2f rss-mib=%.1f cpu-seconds=%.1f\n",
		n, took, bare, took/bare, last.rssMiB, last.cpuSeconds)
	return nil
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
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
	assigned, err := watchAssigned(ctx, env, n)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = parallel(n, workers, func(i int) error {
		s := service("bench", i)
		s.Spec.LoadBalancerClass = &bareClass
		if err := c.Create(ctx, s); err != nil {
			return err
		}
		// The controller's patch, byte for byte.
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"metallb.io/ip-allocated-from-pool":"bench"}},`+
			`"status":{"loadBalancer":{"ingress":[{"ip":"172.20.%d.%d","ipMode":"Proxy"}]}}}`, i/256, i%256)
		return c.Status().Patch(ctx, s, client.RawPatch(types.MergePatchType, []byte(patch)))
	})
	if err != nil {
		return 0, err
	}
	if err := <-assigned; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// controllerRun is one controller phase: when the last Service was
// created, when the last one was seen assigned, and the controller
// process's peak memory and CPU time.
type controllerRun struct {
	created, took      time.Duration
	rssMiB, cpuSeconds float64
}

func controllerPhase(bin string, n, workers int, extra []string) (controllerRun, error) {
	ctx := context.Background()
	env, err := startSeeded(ctx)
	if err != nil {
		return controllerRun{}, err
	}
	defer env.Stop()
	args := append([]string{"controller", "--kubeconfig", env.Kubeconfig, "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=error"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return controllerRun{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	assigned, err := watchAssigned(ctx, env, n)
	if err != nil {
		return controllerRun{}, err
	}
	start := time.Now()
	if apiserverProfile != "" {
		done := profileAPIServer(env, apiserverProfile)
		defer func() { <-done }()
	}
	if err := parallel(n, workers, func(i int) error { return env.Client.Create(ctx, service("bench", i)) }); err != nil {
		return controllerRun{}, fmt.Errorf("create services: %w", err)
	}
	var run controllerRun
	run.created = time.Since(start)
	if err := <-assigned; err != nil {
		return controllerRun{}, err
	}
	run.took = time.Since(start)
	run.rssMiB, run.cpuSeconds = peakRSSMiB(cmd.Process.Pid), cpuSeconds(cmd.Process.Pid)
	return run, nil
}

// profileAPIServer records the API server's CPU profile for 30 seconds
// into path; the channel closes when it is written.
func profileAPIServer(env *controlplane.Env, path string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs, err := kubernetes.NewForConfig(env.Config)
		if err != nil {
			log.Print(err)
			return
		}
		data, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "30").DoRaw(context.Background())
		if err != nil {
			log.Printf("API server profile: %v", err)
			return
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			log.Print(err)
		}
	}()
	return done
}

// watchAssigned watches the bench namespace from now on and reports on the
// channel once n Services carry an address and the pool annotation. Both
// phases are timed by this same observer, started before their first
// write, so its cost on the API server weighs on both alike. A watch, not a
// polling list: listing thousands of Services in a loop would load the API
// server being measured.
func watchAssigned(ctx context.Context, env *controlplane.Env, n int) (<-chan error, error) {
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	w, err := wc.Watch(ctx, &corev1.ServiceList{}, client.InNamespace("bench"))
	if err != nil {
		cancel()
		return nil, err
	}
	out := make(chan error, 1)
	go func() {
		defer cancel()
		start := time.Now()
		done := map[string]bool{}
		rv := ""
		for {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					rv = "" // too old: start over from a fresh list
					continue
				}
				s, ok := ev.Object.(*corev1.Service)
				if !ok {
					continue
				}
				rv = s.ResourceVersion
				if len(s.Status.LoadBalancer.Ingress) == 1 && s.Annotations["metallb.io/ip-allocated-from-pool"] != "" {
					done[s.Name] = true
				}
				if len(done) == n {
					w.Stop()
					out <- nil
					return
				}
			}
			// The API server ends watches it finds too slow to follow;
			// carry on from the last event seen.
			w.Stop()
			if ctx.Err() != nil {
				break
			}
			if w, err = wc.Watch(ctx, &corev1.ServiceList{}, client.InNamespace("bench"),
				&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}}); err != nil {
				out <- fmt.Errorf("watch services again: %w", err)
				return
			}
		}
		out <- fmt.Errorf("only %d of %d services assigned after %v", len(done), n, time.Since(start).Round(time.Second))
	}()
	return out, nil
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

// Package controlplane starts the real Kubernetes control plane that ironlb's
// tests, lab and demo run against: kube-apiserver and etcd built by
// hack/envtest-assets.sh, with ironlb's CRDs installed, plus a kubeconfig and
// the matching kubectl so tests can act exactly as a user would.
package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ironlb/ironlb/controllers"
)

// KubernetesVersion is the version hack/envtest-assets.sh builds by default.
const KubernetesVersion = "v1.35.4"

// Options tune a control plane started outside a test.
type Options struct {
	// BindAddress is where kube-apiserver listens; empty means 127.0.0.1.
	// The lab binds it to the host's lab address so node namespaces reach it.
	BindAddress string
	// CRDDirectory defaults to config/crd/bases of this repository.
	CRDDirectory string
	// Cluster serves a real cluster (kubelets, controllers, pods with
	// ServiceAccounts) rather than tests alone; see configureCluster.
	// Env.Cluster then names the key material the components need.
	Cluster bool
}

// Env is a running control plane.
type Env struct {
	Config     *rest.Config
	Client     client.Client
	Scheme     *runtime.Scheme
	Kubeconfig string // path of a kubeconfig for kubectl and ironlb processes
	AssetsDir  string // where kube-apiserver, etcd and kubectl live
	// Cluster is set when started with Options.Cluster.
	Cluster ClusterFiles

	env     *envtest.Environment
	dir     string
	certDir string
}

// Scheme returns the scheme ironlb's controllers use.
func Scheme() *runtime.Scheme { return controllers.NewScheme() }

// Start runs a control plane for the test and stops it when the test ends.
// Missing binaries fail the test: a control-plane test that skips silently
// would prove nothing.
func Start(t testing.TB) *Env {
	t.Helper()
	e, err := StartWith(Options{})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	return e
}

// StartWith runs a control plane for a program such as the demo; the caller
// must Stop it.
func StartWith(opts Options) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	crds := opts.CRDDirectory
	if crds == "" {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		crds = filepath.Join(root, "config", "crd", "bases")
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{crds},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
		// envtest's 20 s is too short for a 2-core machine that builds or
		// runs a cluster's worth of components beside it.
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	apiserver := env.ControlPlane.GetAPIServer()
	if opts.BindAddress != "" {
		// Both address and port: envtest replaces a lone address with
		// loopback when it picks the port itself.
		port, err := freePort(opts.BindAddress)
		if err != nil {
			return nil, err
		}
		apiserver.SecureServing.Address = opts.BindAddress
		apiserver.SecureServing.Port = port
	}
	// Dual-stack Service ranges, so Services can ask for both families as
	// they do on dual-stack clusters. Private ranges that never leave the
	// apiserver: no traffic is sent to them.
	apiserver.Configure().Set("service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112")
	e := &Env{AssetsDir: assets, env: env}
	if opts.Cluster {
		if e.certDir, err = os.MkdirTemp("", "ironlb-cluster-pki-"); err != nil {
			return nil, err
		}
		if e.Cluster, err = configureCluster(apiserver, opts.BindAddress, e.certDir); err != nil {
			return nil, errors.Join(err, os.RemoveAll(e.certDir))
		}
	}
	cfg, err := env.Start()
	if err != nil {
		if e.certDir != "" {
			err = errors.Join(err, os.RemoveAll(e.certDir))
		}
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", assets, err)
	}
	e.Config, e.Scheme = cfg, env.Scheme
	if err := e.finish(); err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	return e, nil
}

func (e *Env) finish() error {
	c, err := client.New(e.Config, client.Options{Scheme: e.Scheme})
	if err != nil {
		return fmt.Errorf("client for control plane: %w", err)
	}
	e.Client = c
	user, err := e.env.AddUser(envtest.User{Name: "ironlb-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	e.dir, err = os.MkdirTemp("", "ironlb-controlplane-")
	if err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	return os.WriteFile(e.Kubeconfig, kubeconfig, 0o600)
}

// Stop stops kube-apiserver and etcd and removes the kubeconfig.
func (e *Env) Stop() error {
	err := e.env.Stop()
	for _, dir := range []string{e.dir, e.certDir} {
		if dir != "" {
			err = errors.Join(err, os.RemoveAll(dir))
		}
	}
	return err
}

// Kubectl runs the real kubectl against this control plane and returns its
// combined output, as a user would see it.
func (e *Env) Kubectl(args ...string) (string, error) {
	return e.KubectlInput(nil, args...)
}

// KubectlInput is Kubectl with the given bytes on standard input (for
// `kubectl apply -f -`).
func (e *Env) KubectlInput(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.AssetsDir, "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ApplyDryRun sends manifest through `kubectl apply --server-side
// --dry-run=server`: the API server checks every object (schemas, CEL rules,
// RBAC roles, workloads, admission policies) and stores none. A dry run
// does not create the namespace the objects go to, so namespace is created
// first when it is not empty.
func (e *Env) ApplyDryRun(manifest []byte, namespace string) (string, error) {
	if namespace != "" {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
		if err := e.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create namespace %s for the dry run: %w", namespace, err)
		}
	}
	return e.KubectlInput(manifest, "apply", "--server-side", "--dry-run=server", "-f", "-")
}

// freePort asks the kernel for a TCP port free on addr.
func freePort(addr string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port on %s: %w", addr, err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// CacheDir is where the hack/ scripts cache the tools they build:
// $IRONLB_CACHE, else ironlb in the user's cache directory.
func CacheDir() (string, error) {
	if cache := os.Getenv("IRONLB_CACHE"); cache != "" {
		return cache, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("locate the tool cache: %w", err)
	}
	return filepath.Join(base, "ironlb"), nil
}

// AssetsDir finds the control-plane binaries: KUBEBUILDER_ASSETS, or the
// cache that hack/envtest-assets.sh fills.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		cache, err := CacheDir()
		if err != nil {
			return "", fmt.Errorf("locate control plane binaries: %w", err)
		}
		dir = filepath.Join(cache, "k8s", KubernetesVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("control plane binary %s missing in %s (run `make envtest-assets`): %w", bin, dir, err)
		}
	}
	return dir, nil
}

// RepoRoot is the directory holding this module's go.mod, found from the
// working directory upwards (tests run inside their package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module github.com/ironlb/ironlb")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/ironlb/ironlb) not found above the working directory")
		}
		dir = parent
	}
}

// ExamplesDir is the repository's examples/ directory: the tutorial
// manifests the tests, the demo and the docs use.
func ExamplesDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "examples")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("example manifests: %w", err)
	}
	return dir, nil
}

// Eventually polls check until it returns "" and fails the test with its
// last complaint when timeout passes first: tests wait for what a user
// would see, never for a fixed time.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, msg)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

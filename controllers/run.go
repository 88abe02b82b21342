package controllers

import (
	"errors"
	"flag"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
)

// Options configure `ironlb controller`.
type Options struct {
	Kubeconfig  string
	MetricsAddr string
	ProbeAddr   string
	// PprofAddr serves Go's profiles (/debug/pprof) when set.
	PprofAddr      string
	LeaderElect    bool
	Namespace      string
	LBClass        string
	ReconcileBurst int
	APIQPS         float64
	APIBurst       int
	// IPMode is the status.loadBalancer.ingress[].ipMode published: Proxy
	// (the default, also for "") when the speakers' forwarder carries the
	// traffic, which tells kube-proxy to leave the addresses alone; VIP when
	// the speakers run with --forwarder=off and kube-proxy carries it.
	IPMode corev1.LoadBalancerIPMode
	// SkipNameValidation lets tests run several managers in one process.
	SkipNameValidation bool
	zap                zap.Options
}

// BindFlags registers the controller's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; defaults to $KUBECONFIG, then the in-cluster configuration")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":7472", "address the Prometheus metrics endpoint binds to; 0 disables it")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "address the /healthz and /readyz probes bind to; 0 disables them")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", "", "address serving Go's CPU and memory profiles at /debug/pprof; empty disables it")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one active controller through a Lease, so replicas never assign concurrently")
	fs.StringVar(&o.Namespace, "namespace", DefaultNamespace(), "namespace holding the metallb.io configuration (IPAddressPools, advertisements, peers)")
	fs.StringVar(&o.LBClass, "lb-class", "", "serve only Services with this spec.loadBalancerClass; empty serves Services without a class")
	fs.Float64Var(&o.APIQPS, "kube-api-qps", 200, "sustained requests per second to the API server (client-go's default of 5 would make a burst of new Services wait minutes)")
	fs.IntVar(&o.APIBurst, "kube-api-burst", 400, "burst of requests to the API server above --kube-api-qps")
	fs.IntVar(&o.ReconcileBurst, "service-workers", 16, "Services whose status is written in parallel (allocation itself is serialised)")
	o.IPMode = corev1.LoadBalancerIPModeProxy
	fs.Func("ip-mode", "ipMode published with every address: Proxy (default) when the speakers' forwarder carries the traffic, so kube-proxy leaves the addresses alone; VIP when the speakers run with --forwarder=off and kube-proxy carries it", func(s string) error {
		m, err := parseIPMode(s)
		o.IPMode = m
		return err
	})
	o.zap.BindFlags(fs)
}

// ErrUnknownIPMode is returned for an --ip-mode other than VIP or Proxy.
var ErrUnknownIPMode = errors.New("unknown ip mode")

func parseIPMode(s string) (corev1.LoadBalancerIPMode, error) {
	switch m := corev1.LoadBalancerIPMode(s); m {
	case "":
		return corev1.LoadBalancerIPModeProxy, nil
	case corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy:
		return m, nil
	default:
		return "", fmt.Errorf("%w %q (want VIP or Proxy)", ErrUnknownIPMode, s)
	}
}

func DefaultNamespace() string {
	for _, env := range []string{"METALLB_NAMESPACE", "POD_NAMESPACE"} {
		if ns := os.Getenv(env); ns != "" {
			return ns
		}
	}
	return "metallb-system"
}

// NewScheme returns a scheme with the core Kubernetes types and ironlb's API.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1beta1.AddToScheme, v1beta2.AddToScheme} {
		if err := add(s); err != nil {
			panic(err) // static registration of compiled-in types cannot fail
		}
	}
	return s
}

// RESTConfig honours --kubeconfig, then KUBECONFIG and in-cluster config.
func RESTConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return ctrl.GetConfig()
}

// Run starts the controller manager and blocks until SIGTERM or SIGINT.
func Run(o Options) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	cfg, err := RESTConfig(o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(o.APIQPS), o.APIBurst
	mgr, err := NewManager(cfg, o)
	if err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// NewManager builds the manager with every controller of the controller
// role; tests use it to run the same wiring in-process.
func NewManager(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	if o.Namespace == "" {
		o.Namespace = "metallb-system"
	}
	if _, err := parseIPMode(string(o.IPMode)); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        NewScheme(),
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:        o.ProbeAddr,
		PprofBindAddress:              o.PprofAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "ironlb-controller",
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: &o.SkipNameValidation},
		Cache:                         cache.Options{ByObject: CacheByObject(o.Namespace, &v1beta1.ConfigurationState{})},
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := Setup(mgr, o); err != nil {
		return nil, err
	}
	return mgr, nil
}

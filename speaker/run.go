// Package speaker is ironlb's node agent (`ironlb speaker`). On every node it
// watches the Services that have addresses, their EndpointSlices, the Nodes
// and the metallb.io configuration, learns from memberlist which speakers
// are alive, and recomputes from all of it, on every change, what this node
// announces. The computation is the pure function Desired; the protocol
// packages (speaker/layer2 today) diff that desired state against what they
// do now.
package speaker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/speaker/forwarder"
	"github.com/ironlb/ironlb/speaker/layer2"
	"github.com/ironlb/ironlb/speaker/membership"
)

// Secret holding the memberlist encryption key, as in MetalLB; the
// controller creates it when missing.
const (
	MemberlistSecret    = controllers.MemberlistSecret
	MemberlistSecretKey = controllers.MemberlistSecretKey
)

// ErrNoMemberlistKey is returned when the memberlist Secret did not appear
// within --memberlist-secret-wait and unencrypted gossip is not allowed.
var ErrNoMemberlistKey = errors.New("no memberlist key")

// ErrNoNodeName is returned when neither --node-name nor NODE_NAME is set.
var ErrNoNodeName = errors.New("node name unknown: set --node-name or NODE_NAME")

// Options configure `ironlb speaker`.
type Options struct {
	NodeName    string
	Kubeconfig  string
	Namespace   string
	MetricsAddr string
	ProbeAddr   string
	LBClass     string

	// MemberlistBindAddr is the node address memberlist binds to; empty
	// means $POD_IP (the node's address under hostNetwork), then the
	// Node's first InternalIP, IPv4 preferred.
	MemberlistBindAddr string
	MemberlistPort     int
	// MemberlistAllowUnencrypted lets memberlist run without a key when
	// the Secret is absent; otherwise the speaker waits for the Secret up
	// to MemberlistSecretWait and then fails.
	MemberlistAllowUnencrypted bool
	MemberlistSecretWait       time.Duration
	// Failure-detection knobs, passed to speaker/membership; its package
	// comment explains the trade-off (detection time against probe traffic
	// and false suspicion under load).
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	IndirectChecks int
	SuspicionMult  int
	GossipInterval time.Duration
	// RejoinInterval is how often Nodes whose speaker is not a member are
	// joined again (late starters, healed partitions).
	RejoinInterval time.Duration

	// ExcludeInterfaces are name prefixes of interfaces never announced on
	// unless an L2Advertisement names them.
	ExcludeInterfaces []string

	// Forwarder is auto, ipvs, nftables or off (see speaker/forwarder's
	// Resolve); empty means off, so that tests and embedders never program
	// the kernel unasked. The flag defaults to auto.
	Forwarder string
	// ResyncPeriod is how often the whole state is applied again without
	// any change in the cluster, so that what another program altered in
	// the kernel (forwarding tables, bound addresses) is put back; 0 means
	// only on changes.
	ResyncPeriod time.Duration

	zap zap.Options
}

// BindFlags registers the speaker's flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of the Node this speaker runs on (default $NODE_NAME)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; defaults to $KUBECONFIG, then the in-cluster configuration")
	fs.StringVar(&o.Namespace, "namespace", controllers.DefaultNamespace(), "namespace holding the metallb.io configuration, the memberlist Secret and the ServiceL2Status objects")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", ":7472", "address the Prometheus metrics endpoint binds to; 0 disables it")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":7473", "address the /healthz and /readyz probes bind to; 0 disables them")
	fs.StringVar(&o.LBClass, "lb-class", "", "announce only Services with this spec.loadBalancerClass; empty announces Services without a class")
	fs.StringVar(&o.MemberlistBindAddr, "memberlist-bind-address", "", "node address memberlist binds to (default $POD_IP, then the Node's InternalIP)")
	fs.IntVar(&o.MemberlistPort, "memberlist-port", membership.DefaultPort, "memberlist TCP and UDP port, the same on every node")
	fs.BoolVar(&o.MemberlistAllowUnencrypted, "memberlist-allow-unencrypted", false, "run memberlist unencrypted when the memberlist Secret is absent (anyone on the network could then join and sway the elections); by default the speaker waits for the Secret and fails without it")
	fs.DurationVar(&o.MemberlistSecretWait, "memberlist-secret-wait", 2*time.Minute, "how long the speaker waits at start for the memberlist Secret (the controller creates it) before it fails")
	fs.DurationVar(&o.ProbeInterval, "memberlist-probe-interval", 100*time.Millisecond, "how often each speaker probes one peer; lower detects failures sooner at the cost of more probe packets")
	fs.DurationVar(&o.ProbeTimeout, "memberlist-probe-timeout", 50*time.Millisecond, "wait for a direct probe's answer before asking peers to probe indirectly; keep it above the network's worst round-trip time")
	fs.IntVar(&o.IndirectChecks, "memberlist-indirect-checks", 2, "peers asked to probe a member that missed a direct probe")
	fs.IntVar(&o.SuspicionMult, "memberlist-suspicion-mult", 2, "a suspect is declared dead after this many probe intervals (times log10 of the cluster size); raise it on loaded or lossy networks to avoid false failovers")
	fs.DurationVar(&o.GossipInterval, "memberlist-gossip-interval", 50*time.Millisecond, "how fast news of failures and departures spreads")
	fs.DurationVar(&o.RejoinInterval, "memberlist-rejoin-interval", 10*time.Second, "how often Nodes whose speaker is not a member are joined again")
	fs.Func("exclude-interfaces", "comma-separated interface name prefixes never announced on unless an L2Advertisement names them (default "+strings.Join(layer2.DefaultExcludedPrefixes, ",")+")", func(s string) error {
		o.ExcludeInterfaces = nil
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				o.ExcludeInterfaces = append(o.ExcludeInterfaces, p)
			}
		}
		if o.ExcludeInterfaces == nil {
			o.ExcludeInterfaces = []string{}
		}
		return nil
	})
	fs.StringVar(&o.Forwarder, "forwarder", string(forwarder.ModeAuto), "carry service traffic to the endpoints: auto (IPVS when the kernel has it, else nftables), ipvs, nftables, or off (leave it to kube-proxy; then run the controller with --ip-mode=VIP)")
	fs.DurationVar(&o.ResyncPeriod, "resync-period", 30*time.Second, "how often the speaker applies its whole state again even when nothing changed, repairing forwarding rules and addresses another program altered (as kube-proxy's sync period); 0 disables")
	o.zap.BindFlags(fs)
}

// Run starts the speaker and blocks until SIGTERM or SIGINT, then leaves
// memberlist so the other speakers take this node's addresses at once.
func Run(o Options) error {
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	cfg, err := controllers.RESTConfig(o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	mgr, err := NewManager(ctx, cfg, o, Deps{})
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// Deps are the speaker's parts that touch the network. NewManager builds the
// real ones (memberlist, ARP/NDP responders) for those left nil; tests pass
// fakes.
type Deps struct {
	Announcer Announcer
	Members   Members
	// SharedProcess allows several speakers in one process (tests): their
	// controllers then share names and metrics.
	SharedProcess bool
}

// Members is the memberlist view the speaker needs.
type Members interface {
	// Alive returns the names of the live speakers, nil before start.
	Alive() []string
	// Changes receives a value after membership changed.
	Changes() <-chan struct{}
	// Join contacts peers ("host:port") and merges their view.
	Join(peers []string) (int, error)
}

// NewManager builds the speaker's manager. ctx bounds the start-up reads
// (this node's address, the memberlist Secret) made before the manager runs.
func NewManager(ctx context.Context, cfg *rest.Config, o Options, d Deps) (ctrl.Manager, error) {
	if o.NodeName == "" {
		return nil, ErrNoNodeName
	}
	if o.Namespace == "" {
		o.Namespace = "metallb-system"
	}
	if o.MemberlistPort == 0 {
		o.MemberlistPort = membership.DefaultPort
	}
	if o.RejoinInterval == 0 {
		o.RejoinInterval = 10 * time.Second
	}
	log := ctrl.Log.WithName("speaker").WithValues("node", o.NodeName)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 controllers.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.ProbeAddr,
		// Every speaker acts for its own node: no leader election.
		LeaderElection: false,
		Controller:     config.Controller{SkipNameValidation: &d.SharedProcess},
		Cache:          cache.Options{ByObject: controllers.CacheByObject(o.Namespace, &v1beta1.ServiceL2Status{}, &v1beta1.ServiceBGPStatus{}, &v1beta1.ConfigurationState{})},
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

	if d.Members == nil || d.Announcer == nil {
		// The manager's client reads from a cache that is not running yet.
		direct, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
		if err != nil {
			return nil, fmt.Errorf("create client: %w", err)
		}
		if d.Members == nil {
			m, err := newMembers(ctx, direct, o, log)
			if err != nil {
				return nil, err
			}
			if err := mgr.Add(m); err != nil {
				return nil, err
			}
			d.Members = m
		}
		if d.Announcer == nil {
			a := newResponders(o, log)
			if err := mgr.Add(a.responders); err != nil {
				return nil, err
			}
			d.Announcer = a
		}
	}

	m, err := newMetrics(metrics.Registry, d.Announcer)
	if err != nil {
		return nil, err
	}
	fwd, backend, err := newForwarding(o.Forwarder, o.NodeName, mgr.GetEventRecorder(eventSource), log)
	if err != nil {
		return nil, err
	}
	m.forwarderBackend.WithLabelValues(string(backend)).Set(1)
	// In the manager's default group, stopped together with memberlist and
	// the responders: the drain runs while the addresses move away.
	if err := mgr.Add(fwd); err != nil {
		return nil, err
	}
	j := &joiner{client: mgr.GetClient(), members: d.Members, node: o.NodeName, port: o.MemberlistPort, every: o.RejoinInterval, log: log, joined: make(chan struct{})}
	if err := mgr.Add(j); err != nil {
		return nil, err
	}
	bgpm := newBGPMode(o.NodeName, mgr.GetClient(), mgr.GetEventRecorder(eventSource), log)
	if err := mgr.Add(bgpm); err != nil {
		return nil, err
	}
	if err := registerBGPMetrics(metrics.Registry, bgpm); err != nil {
		return nil, err
	}
	bgpm.state = newConfigState(mgr.GetClient(), o.Namespace, o.NodeName, log)
	if err := mgr.Add(bgpm.state); err != nil {
		return nil, err
	}
	r := &reconciler{
		client:    mgr.GetClient(),
		bgp:       bgpm,
		recorder:  mgr.GetEventRecorder(eventSource),
		node:      o.NodeName,
		namespace: o.Namespace,
		lbClass:   o.LBClass,
		announcer: d.Announcer,
		forwarder: fwd,
		members:   d.Members,
		joined:    j.joined,
		metrics:   m,
		status:    &statusWriter{client: mgr.GetClient(), node: o.NodeName, namespace: o.Namespace, announcer: d.Announcer},
		resync:    o.ResyncPeriod,
	}
	bgpm.status = r.status
	if err := r.setupWithManager(mgr); err != nil {
		return nil, err
	}
	return mgr, nil
}

// newMembers builds this node's memberlist member: bound to the node's
// address, encrypted with the key of the memberlist Secret.
func newMembers(ctx context.Context, c client.Reader, o Options, log logr.Logger) (*membership.Members, error) {
	bind, err := bindAddr(ctx, c, o)
	if err != nil {
		return nil, err
	}
	key, err := waitSecretKey(ctx, c, o, log)
	if err != nil {
		return nil, err
	}
	m, err := membership.New(membership.Config{
		NodeName:       o.NodeName,
		BindAddr:       bind,
		Port:           o.MemberlistPort,
		SecretKey:      key,
		ProbeInterval:  o.ProbeInterval,
		ProbeTimeout:   o.ProbeTimeout,
		IndirectChecks: o.IndirectChecks,
		SuspicionMult:  o.SuspicionMult,
		GossipInterval: o.GossipInterval,
		Logger:         log,
	})
	if err != nil {
		return nil, fmt.Errorf("configure memberlist: %w", err)
	}
	return m, nil
}

// secretPoll is how often the speaker looks for the memberlist Secret
// while it waits.
const secretPoll = 2 * time.Second

// waitSecretKey returns the memberlist key. Without
// --memberlist-allow-unencrypted it waits for the Secret (the controller
// creates it at its first start) up to o.MemberlistSecretWait, then fails
// naming the Secret; with it, an absent Secret means no encryption, said
// in the log.
func waitSecretKey(ctx context.Context, c client.Reader, o Options, log logr.Logger) ([]byte, error) {
	name := o.Namespace + "/" + MemberlistSecret
	key, err := secretKey(ctx, c, o.Namespace)
	if key != nil || err != nil {
		return key, err
	}
	if o.MemberlistAllowUnencrypted {
		log.Info("memberlist traffic is not encrypted: no key in the secret, and --memberlist-allow-unencrypted is set", "secret", name, "key", MemberlistSecretKey)
		return nil, nil
	}
	log.Info("waiting for the memberlist secret, which ironlb's controller creates", "secret", name, "key", MemberlistSecretKey, "timeout", o.MemberlistSecretWait)
	deadline := time.Now().Add(o.MemberlistSecretWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for secret %s: %w", name, ctx.Err())
		case <-time.After(secretPoll):
		}
		if key, err = secretKey(ctx, c, o.Namespace); key != nil || err != nil {
			return key, err
		}
	}
	return nil, fmt.Errorf("%w: secret %s has no %q after %v; is ironlb's controller running? It creates the secret; or create it yourself with `kubectl create secret generic -n %s %s --from-literal=%s=\"$(openssl rand -base64 128)\"`, or run with --memberlist-allow-unencrypted",
		ErrNoMemberlistKey, name, MemberlistSecretKey, o.MemberlistSecretWait, o.Namespace, MemberlistSecret, MemberlistSecretKey)
}

// bindAddr is --memberlist-bind-address, else $POD_IP, else the first
// InternalIP of this node's Node object, IPv4 preferred.
func bindAddr(ctx context.Context, c client.Reader, o Options) (netip.Addr, error) {
	for _, s := range []string{o.MemberlistBindAddr, os.Getenv("POD_IP")} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("memberlist bind address %q: %w", s, err)
		}
		return a.Unmap(), nil
	}
	var n corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: o.NodeName}, &n); err != nil {
		return netip.Addr{}, fmt.Errorf("read node %s for its address: %w", o.NodeName, err)
	}
	addrs := internalIPs(&n)
	for _, a := range addrs {
		if a.Is4() {
			return a, nil
		}
	}
	if len(addrs) > 0 {
		return addrs[0], nil
	}
	return netip.Addr{}, fmt.Errorf("node %s has no InternalIP: set --memberlist-bind-address", o.NodeName)
}

// secretKey reads the memberlist key; nil when the Secret or its key is
// absent. The value is never logged.
func secretKey(ctx context.Context, c client.Reader, namespace string) ([]byte, error) {
	var s corev1.Secret
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: MemberlistSecret}, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s/%s: %w", namespace, MemberlistSecret, err)
	}
	if k := s.Data[MemberlistSecretKey]; len(k) > 0 {
		return k, nil
	}
	return nil, nil
}

func internalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// Package rbac_test checks the permissions of config/rbac against a real
// API server that enforces RBAC: what each ServiceAccount may and may not
// do, asked of the API server itself, and the controller and a speaker
// running under exactly those permissions.
package rbac_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	authzv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/speaker"
)

const ns = "metallb-system"

func TestMain(m *testing.M) {
	// The roles' errors (a forbidden request above all) go to stderr,
	// shown by `go test -v` and on failure.
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	os.Exit(m.Run())
}

// account is a ServiceAccount of the installation as the API server sees
// a Pod using it.
type account string

const (
	controllerSA account = "controller"
	speakerSA    account = "speaker"
)

func (a account) user() string { return "system:serviceaccount:" + ns + ":" + string(a) }

func (a account) groups() []string {
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
}

// impersonating is cfg acting as the account: every request is authorised
// as the account's (the control plane's admin may impersonate).
func (a account) impersonating(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: a.user(), Groups: a.groups()}
	return c
}

// installRBAC creates the objects of config/rbac, following its
// kustomization's resources as `kubectl apply -k` would, in a control
// plane with ironlb's namespace.
func installRBAC(t *testing.T) *controlplane.Env {
	t.Helper()
	env := controlplane.Start(t)
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kustomizeResources(filepath.Join(root, "config", "rbac"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	return env
}

// kustomizeResources reads the objects a kustomization lists (files and,
// recursively, directories); config/rbac uses no other kustomize feature.
func kustomizeResources(dir string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		path := filepath.Join(dir, r)
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			objs, err := kustomizeResources(path)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			o := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &o.Object); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if len(o.Object) > 0 {
				out = append(out, o)
			}
		}
	}
	return out, nil
}

// access is one request: verb on group/resource[/subresource], in
// namespace ("" for cluster-wide or cluster-scoped).
type access struct {
	verb, group, resource, subresource, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in " + a.namespace
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

// allowed asks the API server's authoriser, as `kubectl auth can-i --as`
// does.
func allowed(t *testing.T, env *controlplane.Env, who account, a access) bool {
	t.Helper()
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: who.user(), Groups: who.groups(),
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.namespace},
	}}
	if err := env.Client.Create(context.Background(), sar); err != nil {
		t.Fatalf("SubjectAccessReview %s for %s: %v", a, who, err)
	}
	return sar.Status.Allowed
}

// each expands verbs x resources into accesses.
func each(verbs, group string, resources []string, namespace string) []access {
	var out []access
	for _, v := range strings.Split(verbs, ",") {
		for _, r := range resources {
			res, sub, _ := strings.Cut(r, "/")
			out = append(out, access{verb: v, group: group, resource: res, subresource: sub, namespace: namespace})
		}
	}
	return out
}

var configKinds = []string{"ipaddresspools", "l2advertisements", "bgpadvertisements", "communities", "bfdprofiles", "bgppeers"}

// TestPermissions: what each account must be able to do (so a role too
// tight fails) and what it must not (Secrets and Leases outside ironlb's
// namespace, Service specs, anything it does not use).
func TestPermissions(t *testing.T) {
	env := installRBAC(t)
	var must, mustNot = map[account][]access{}, map[account][]access{}
	for _, a := range [][]access{
		each("list,watch", "", []string{"services", "namespaces"}, ""),
		each("patch", "", []string{"services/status"}, "default"),
		each("create,patch", "", []string{"events"}, "default"),
		each("create,patch", "", []string{"events"}, ns),
		each("list,watch,create", "", []string{"secrets"}, ns),
		each("get,create,update", "coordination.k8s.io", []string{"leases"}, ns),
		each("list,watch", "metallb.io", configKinds, ns),
		// Cluster-wide, metadata only: configuration created outside the
		// namespace gets a WrongNamespace Event where the admission policy
		// is not installed.
		each("list,watch", "metallb.io", configKinds, ""),
		each("patch", "metallb.io", []string{"ipaddresspools/status", "configurationstates/status"}, ns),
		each("list,watch,create,update", "metallb.io", []string{"configurationstates"}, ns),
	} {
		must[controllerSA] = append(must[controllerSA], a...)
	}
	for _, a := range [][]access{
		each("list,watch", "", []string{"services", "nodes"}, ""),
		each("get", "", []string{"nodes"}, ""),
		each("list,watch", "discovery.k8s.io", []string{"endpointslices"}, ""),
		each("create,patch", "events.k8s.io", []string{"events"}, "default"),
		each("get,list,watch", "", []string{"secrets"}, ns),
		each("list,watch", "metallb.io", configKinds, ns),
		each("list,watch,create,update", "metallb.io", []string{"configurationstates"}, ns),
		each("patch", "metallb.io", []string{"configurationstates/status"}, ns),
		each("list,watch,create,delete", "metallb.io", []string{"servicel2statuses", "servicebgpstatuses"}, ns),
		each("update", "metallb.io", []string{"servicel2statuses/status", "servicebgpstatuses/status"}, ns),
	} {
		must[speakerSA] = append(must[speakerSA], a...)
	}
	for _, who := range []account{controllerSA, speakerSA} {
		for _, other := range []string{"default", "kube-system", ""} {
			mustNot[who] = append(mustNot[who], each("get,list,watch,create,update,patch,delete", "", []string{"secrets"}, other)...)
			mustNot[who] = append(mustNot[who], each("get,list,watch,create,update,patch,delete", "coordination.k8s.io", []string{"leases"}, other)...)
		}
		mustNot[who] = append(mustNot[who], each("update,patch,create,delete", "", []string{"services"}, "default")...)
		mustNot[who] = append(mustNot[who], each("create,update,patch,delete", "metallb.io", configKinds, ns)...)
		mustNot[who] = append(mustNot[who], each("get,list", "", []string{"pods", "configmaps"}, "")...)
		mustNot[who] = append(mustNot[who], each("list", "", []string{"endpoints"}, "")...)
	}
	// Never rewrite or remove a key; no Lease deletion.
	mustNot[controllerSA] = append(mustNot[controllerSA], each("get,update,patch,delete", "", []string{"secrets"}, ns)...)
	mustNot[controllerSA] = append(mustNot[controllerSA], each("delete,list,watch", "coordination.k8s.io", []string{"leases"}, ns)...)
	mustNot[controllerSA] = append(mustNot[controllerSA], each("update", "", []string{"services/status"}, "default")...)
	mustNot[controllerSA] = append(mustNot[controllerSA], each("list", "", []string{"nodes"}, "")...)
	mustNot[controllerSA] = append(mustNot[controllerSA], each("create", "metallb.io", []string{"servicel2statuses"}, ns)...)
	mustNot[speakerSA] = append(mustNot[speakerSA], each("create,update,patch,delete", "", []string{"secrets"}, ns)...)
	mustNot[speakerSA] = append(mustNot[speakerSA], each("patch,update", "", []string{"services/status", "nodes", "nodes/status"}, "")...)
	mustNot[speakerSA] = append(mustNot[speakerSA], each("list", "", []string{"namespaces"}, "")...)
	mustNot[speakerSA] = append(mustNot[speakerSA], each("list", "metallb.io", configKinds, "default")...)
	mustNot[speakerSA] = append(mustNot[speakerSA], each("create", "", []string{"events"}, "default")...)

	for _, who := range []account{controllerSA, speakerSA} {
		for _, a := range must[who] {
			if !allowed(t, env, who, a) {
				t.Errorf("%s cannot %s, which it needs", who, a)
			}
		}
		for _, a := range mustNot[who] {
			if allowed(t, env, who, a) {
				t.Errorf("%s may %s, which it must not", who, a)
			}
		}
	}
}

// TestControllerRunsUnderItsRole runs the controller with its account's
// permissions only: it wins the Lease, creates the memberlist Secret,
// assigns an address and writes the ip-allocated-from-pool annotation
// through the status subresource (it may not patch Services), and removes
// the annotation the same way when the Service stops being a LoadBalancer.
func TestControllerRunsUnderItsRole(t *testing.T) {
	env := installRBAC(t)
	ctx := t.Context()
	mgr, err := controllers.NewManager(controllerSA.impersonating(env.Config), controllers.Options{
		Namespace: ns, LeaderElect: true, MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true, ReconcileBurst: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, mgr.Start)
	c := env.Client
	create(t, c,
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "first-pool"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []string{"172.25.254.50-172.25.254.99"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: webSpec()},
	)
	eventually(t, "the Service's address and annotation", func() string {
		var s corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &s); err != nil {
			return err.Error()
		}
		if len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].IP != "172.25.254.50" || s.Annotations["metallb.io/ip-allocated-from-pool"] != "first-pool" {
			return fmt.Sprintf("ingress %+v, annotations %v", s.Status.LoadBalancer.Ingress, s.Annotations)
		}
		return ""
	})
	eventually(t, "the memberlist Secret", func() string {
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.MemberlistSecret}, &s); err != nil {
			return err.Error()
		}
		if len(s.Data[controllers.MemberlistSecretKey]) == 0 {
			return "no secretkey"
		}
		return ""
	})
	eventually(t, "the leader's Lease", func() string {
		var l coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ironlb-controller"}, &l); err != nil {
			return err.Error()
		}
		return ""
	})
	eventually(t, "the controller's ConfigurationState", func() string {
		var l v1beta1.ConfigurationStateList
		if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return err.Error()
		}
		if len(l.Items) == 0 || l.Items[0].Status.Result == "" {
			return fmt.Sprintf("%d ConfigurationStates, none with a result", len(l.Items))
		}
		return ""
	})

	// No longer a LoadBalancer: the annotation goes, through the status
	// subresource as well.
	update(t, c, "web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	eventually(t, "the annotation removed", func() string {
		var s corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "web"}, &s); err != nil {
			return err.Error()
		}
		if v, ok := s.Annotations["metallb.io/ip-allocated-from-pool"]; ok {
			return "annotation still " + v
		}
		return ""
	})
}

// TestSpeakerRunsUnderItsRole runs a speaker (memberlist and the ARP/NDP
// responders faked) with its account's permissions only: it reads the
// configuration, the Service, its EndpointSlice and the Node, announces the
// Service, reports it in a ServiceL2Status, and writes its
// ConfigurationState.
func TestSpeakerRunsUnderItsRole(t *testing.T) {
	env := installRBAC(t)
	ctx := t.Context()
	c := env.Client
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"kubernetes.io/hostname": "n1"}}}
	create(t, c, node,
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "first-pool"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []string{"172.25.254.50-172.25.254.99"}}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []string{"first-pool"}, Interfaces: []string{"eth0"}}},
	)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: webSpec()}
	create(t, c, svc, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr("n1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	})
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "172.25.254.50"}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}

	ann := &announcer{}
	mgr, err := speaker.NewManager(ctx, speakerSA.impersonating(env.Config), speaker.Options{
		NodeName: "n1", Namespace: ns, MetricsAddr: "0", ProbeAddr: "0",
	}, speaker.Deps{Announcer: ann, Members: members{}, SharedProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	run(t, mgr.Start)
	eventually(t, "the announcement", func() string {
		if got := ann.addrs(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("172.25.254.50")}) {
			return fmt.Sprintf("announcing %v", got)
		}
		return ""
	})
	eventually(t, "the ServiceL2Status", func() string {
		var l v1beta1.ServiceL2StatusList
		if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return err.Error()
		}
		if len(l.Items) != 1 || l.Items[0].Status.Node != "n1" {
			return fmt.Sprintf("%+v", l.Items)
		}
		return ""
	})
	eventually(t, "the speaker's ConfigurationState", func() string {
		var s v1beta1.ConfigurationState
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: speaker.ConfigurationStateName("n1")}, &s); err != nil {
			return err.Error()
		}
		if s.Status.Result == "" {
			return "no result"
		}
		return ""
	})
}

func webSpec() corev1.ServiceSpec {
	return corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}}
}

// announcer records the addresses the speaker last asked to announce.
type announcer struct {
	mu   sync.Mutex
	last []speaker.Announcement
}

func (a *announcer) Sync(_ context.Context, as []speaker.Announcement) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = slices.Clone(as)
	return nil
}

func (a *announcer) addrs() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for _, x := range a.last {
		out = append(out, x.Addr)
	}
	return out
}

// members is a memberlist view with this node alone, which never changes.
type members struct{}

var noChanges = make(chan struct{})

func (members) Alive() []string                  { return []string{"n1"} }
func (members) Changes() <-chan struct{}         { return noChanges }
func (members) Join(peers []string) (int, error) { return 0, nil }

// run starts a manager and stops it, waiting, when the test ends.
func run(t *testing.T, start func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

func create(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func update(t *testing.T, c client.Client, name string, change func(*corev1.Service)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var s corev1.Service
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &s); err != nil {
			return err
		}
		change(&s)
		return c.Update(context.Background(), &s)
	})
	if err != nil {
		t.Fatalf("update service %s: %v", name, err)
	}
}

// eventually waits up to a minute for check to return "".
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	controlplane.Eventually(t, time.Minute, what, check)
}

func ptr[T any](v T) *T { return &v }

// Package rbac_test checks the permissions of config/rbac against a real
// API server that enforces RBAC: what each ServiceAccount may and may not
// do, asked of the API server itself, and the controller and a speaker
// running under exactly those permissions.
package rbac_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/speaker"
)

const ns = "metallb-system"

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

// installRBAC applies config/rbac as `kubectl apply -k` would, into a
// control plane with ironlb's namespace.
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
	rendered, err := env.Kubectl("kustomize", filepath.Join(root, "config", "rbac"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := env.KubectlInput([]byte(rendered), "apply", "-f", "-"); err != nil {
		t.Fatalf("apply config/rbac: %v\n%s", err, out)
	}
	return env
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
		each("list,watch", "", []string{"services", "namespaces"}, "default"),
		each("patch", "", []string{"services/status"}, "default"),
		each("create,patch", "", []string{"events"}, "default"),
		each("create,patch", "", []string{"events"}, ns),
		each("list,watch,create", "", []string{"secrets"}, ns),
		each("get,create,update", "coordination.k8s.io", []string{"leases"}, ns),
		each("list,watch", "metallb.io", configKinds, ns),
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
		mustNot[who] = append(mustNot[who], each("list", "metallb.io", configKinds, "default")...)
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
// through the status subresource, and removes the annotation again when
// the Service goes to another load balancer.
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

	// Handed to another load balancer (through ClusterIP: the class cannot
	// change while the type is LoadBalancer): only the annotation is ours
	// to remove.
	update(t, c, "web", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	update(t, c, "web", func(s *corev1.Service) {
		s.Spec = webSpec()
		s.Spec.LoadBalancerClass = ptr("example.com/other")
	})
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

// members is a memberlist view with this node alone.
type members struct{}

func (members) Alive() []string                  { return []string{"n1"} }
func (members) Changes() <-chan struct{}         { return nil }
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
	var s corev1.Service
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	change(&s)
	if err := c.Update(context.Background(), &s); err != nil {
		t.Fatalf("update service %s: %v", name, err)
	}
}

// eventually waits up to a minute for check to return "".
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	controlplane.Eventually(t, time.Minute, what, check)
}

func ptr[T any](v T) *T { return &v }

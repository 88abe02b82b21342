package crd_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// One control plane serves every test of this package: starting it costs
// seconds, and the tests use separate namespaces.
var (
	cpOnce sync.Once
	cp     *controlplane.Env
	cpErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cp != nil {
		if err := cp.Stop(); err != nil {
			code = 1
		}
	}
	os.Exit(code)
}

// cluster is a running API server with the CRDs of config/crd/bases, and a
// client whose scheme holds exactly ironlb's API types.
type cluster struct {
	*controlplane.Env
	c      client.Client
	scheme *runtime.Scheme
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cpOnce.Do(func() { cp, cpErr = controlplane.StartWith(controlplane.Options{}) })
	if cpErr != nil {
		t.Fatalf("start control plane: %v", cpErr)
	}
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1beta1.AddToScheme, v1beta2.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cp.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return &cluster{Env: cp, c: c, scheme: s}
}

func (k *cluster) namespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k.c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// decodeAll reads a multi-document manifest into typed objects, strictly, so
// a misspelt field in test data fails instead of being dropped.
func (k *cluster) decodeAll(t *testing.T, data []byte) []client.Object {
	t.Helper()
	dec := serializer.NewCodecFactory(k.scheme, serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []client.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read manifest: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode manifest document: %v\n%s", err, doc)
		}
		objs = append(objs, obj.(client.Object))
	}
}

// readBack fetches obj's namesake from the server into a fresh object of the
// same kind and version.
func (k *cluster) readBack(t *testing.T, obj client.Object) client.Object {
	t.Helper()
	gvks, _, err := k.scheme.ObjectKinds(obj)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := k.scheme.New(gvks[0])
	if err != nil {
		t.Fatal(err)
	}
	got := fresh.(client.Object)
	if err := k.c.Get(context.Background(), client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatalf("get %s %s: %v", gvks[0].Kind, obj.GetName(), err)
	}
	return got
}

func fieldOf(obj any, name string) any {
	return reflect.ValueOf(obj).Elem().FieldByName(name).Interface()
}

var timeEqual = cmp.Comparer(func(a, b metav1.Time) bool { return a.Equal(&b) })

// TestExamplesApply applies the repository's example pools as a user
// would and checks what `kubectl get ipaddresspools -A` shows them.
func TestExamplesApply(t *testing.T) {
	k := startCluster(t)
	dir, err := controlplane.ExamplesDir()
	if err != nil {
		t.Fatal(err)
	}
	k.namespace(t, "metallb-system")
	checkExamplePools(t, k, dir, []examplePool{
		{file: "01-l2-first-pool.yaml", pool: "first-pool", address: "172.25.254.50-172.25.254.99"},
		{file: "02-l2-pool-192-168-100.yaml", pool: "lan-pool", address: "192.168.100.100-192.168.100.150"},
	}, "l2advertisement.metallb.io/example\nl2advertisement.metallb.io/lan\n")
	checkExampleServices(t, k, dir)
}

// sharedExamples is where the manifests users apply to MetalLB today sit
// beside the repository on the machines this project is developed on.
// This test alone reads outside the repository: it proves those files
// apply unchanged, as they are.
const sharedExamples = "../shared/examples"

// TestSharedExamplesApplyUnchanged applies the tutorial's own manifests,
// unchanged, when they are present beside the repository.
func TestSharedExamplesApplyUnchanged(t *testing.T) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, sharedExamples)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("the tutorial's manifests are not beside the repository (%s: %v); the repository's examples/ are tested by TestExamplesApply", dir, err)
	}
	k := startCluster(t)
	k.namespace(t, "metallb-system")
	// Both files name their pool first-pool: the second replaces the first.
	checkExamplePools(t, k, dir, []examplePool{
		{file: "01-l2-first-pool.yaml", pool: "first-pool", address: "172.25.254.50-172.25.254.99"},
		{file: "02-l2-pool-192-168-100.yaml", pool: "first-pool", address: "192.168.100.100-192.168.100.150"},
	}, "l2advertisement.metallb.io/example\nl2advertisement.metallb.io/l2-adv\n")
	checkExampleServices(t, k, dir)
}

// checkExampleServices applies the Service examples (03 to 05) and checks
// that `kubectl get svc` lists each as a LoadBalancer, then removes them.
func checkExampleServices(t *testing.T, k *cluster, dir string) {
	t.Helper()
	for _, tc := range []struct{ file, service string }{
		{"03-service-loadbalancer.yaml", "dhj-service"},
		{"04-service-external-endpoints.yaml", "mysql"},
		{"05-session-affinity.yaml", "my-nginx"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			if out, err := k.Kubectl("apply", "-n", "default", "-f", path); err != nil {
				t.Fatalf("kubectl apply -f %s: %v\n%s", tc.file, err, out)
			}
			t.Cleanup(func() {
				if out, err := k.Kubectl("delete", "-n", "default", "-f", path); err != nil {
					t.Errorf("kubectl delete -f %s: %v\n%s", tc.file, err, out)
				}
			})
			out, err := k.Kubectl("get", "svc", "-n", "default", tc.service, "-o", "jsonpath={.spec.type}")
			if err != nil || out != "LoadBalancer" {
				t.Errorf("kubectl get svc %s: type %q (%v), want LoadBalancer", tc.service, out, err)
			}
		})
	}
}

type examplePool struct{ file, pool, address string }

// checkExamplePools applies each file in turn and checks that `kubectl get
// ipaddresspools -A` then lists its pool with its addresses, and at the end
// that the advertisements are wantAdvs (`kubectl get -o name`). It removes
// the pools and advertisements afterwards: the control plane is shared.
func checkExamplePools(t *testing.T, k *cluster, dir string, pools []examplePool, wantAdvs string) {
	t.Helper()
	t.Cleanup(func() {
		if out, err := k.Kubectl("delete", "ipaddresspools,l2advertisements", "-n", "metallb-system", "--all"); err != nil {
			t.Errorf("clean up the examples: %v\n%s", err, out)
		}
	})
	for _, tc := range pools {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("example manifest missing: %v", err)
			}
			if out, err := k.Kubectl("apply", "-f", path); err != nil {
				t.Fatalf("kubectl apply -f %s: %v\n%s", tc.file, err, out)
			}
			out, err := k.Kubectl("get", "ipaddresspools", "-A")
			if err != nil {
				t.Fatalf("kubectl get ipaddresspools -A: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			wantHeader := []string{"NAMESPACE", "NAME", "AUTO", "ASSIGN", "AVOID", "BUGGY", "IPS", "ADDRESSES"}
			if diff := cmp.Diff(wantHeader, strings.Fields(lines[0])); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			wantRow := []string{"metallb-system", tc.pool, "true", "false", `["` + tc.address + `"]`}
			found := false
			for _, line := range lines[1:] {
				got := strings.Fields(line)
				found = found || len(got) >= len(wantRow) && cmp.Equal(wantRow, got[:len(wantRow)])
			}
			if !found {
				t.Errorf("kubectl get ipaddresspools -A has no row starting with %q:\n%s", wantRow, out)
			}
		})
	}
	out, err := k.Kubectl("get", "l2advertisements", "-n", "metallb-system", "-o", "name")
	if err != nil {
		t.Fatalf("kubectl get l2advertisements: %v", err)
	}
	if out != wantAdvs {
		t.Errorf("l2advertisements = %q, want %q", out, wantAdvs)
	}
}

// TestEveryFieldReadsBack applies a manifest that sets every field of every
// configuration kind and reads each object back unchanged.
func TestEveryFieldReadsBack(t *testing.T) {
	k := startCluster(t)
	k.namespace(t, "crd-every-field")
	path, err := filepath.Abs(filepath.Join("testdata", "every-field.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := k.Kubectl("apply", "-f", path); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	objs := k.decodeAll(t, data)
	if len(objs) != 7 {
		t.Fatalf("testdata holds %d objects, want 7", len(objs))
	}
	for _, want := range objs {
		t.Run(reflect.TypeOf(want).Elem().Name()+"/"+want.GetName(), func(t *testing.T) {
			got := k.readBack(t, want)
			if diff := cmp.Diff(fieldOf(want, "Spec"), fieldOf(got, "Spec")); diff != "" {
				t.Errorf("spec read back differs (-applied +read):\n%s", diff)
			}
			if diff := cmp.Diff(want.GetLabels(), got.GetLabels()); diff != "" {
				t.Errorf("labels (-applied +read):\n%s", diff)
			}
		})
	}

	out, err := k.Kubectl("get", "bgppeers", "-n", "crd-every-field")
	if err != nil {
		t.Fatalf("kubectl get bgppeers: %v", err)
	}
	wantTable := [][]string{
		{"NAME", "ADDRESS", "ASN", "BFD", "PROFILE", "MULTI", "HOPS"},
		{"every-field", "172.25.254.1", "4294967295", "every-field", "true"},
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("kubectl get bgppeers printed:\n%s\nwant a header and two peers", out)
	}
	if diff := cmp.Diff(wantTable[0], strings.Fields(lines[0])); diff != "" {
		t.Errorf("bgppeers header (-want +got):\n%s", diff)
	}
	if got := strings.Fields(lines[1]); len(got) < 5 || !cmp.Equal(wantTable[1], got[:5]) {
		t.Errorf("bgppeers row = %q, want it to start with %q", got, wantTable[1])
	}
}

// TestStatusReadsBack writes the status of the kinds whose content is their
// status and reads it back.
func TestStatusReadsBack(t *testing.T) {
	k := startCluster(t)
	const ns = "crd-status"
	k.namespace(t, ns)
	ctx := context.Background()
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }
	at := metav1.NewTime(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))

	for _, tc := range []struct {
		obj    client.Object
		status func(client.Object)
	}{
		{
			obj: &v1beta1.IPAddressPool{ObjectMeta: meta("pool"), Spec: v1beta1.IPAddressPoolSpec{Addresses: []string{"10.1.0.0/24"}}},
			status: func(o client.Object) {
				o.(*v1beta1.IPAddressPool).Status = v1beta1.IPAddressPoolStatus{AssignedIPv4: 3, AvailableIPv4: 253, AssignedIPv6: 1, AvailableIPv6: 15}
			},
		},
		{
			obj: &v1beta1.ServiceL2Status{ObjectMeta: meta("l2")},
			status: func(o client.Object) {
				o.(*v1beta1.ServiceL2Status).Status = v1beta1.ServiceL2StatusStatus{Node: "node-1", ServiceName: "web", ServiceNamespace: "shop", Interfaces: []v1beta1.InterfaceInfo{{Name: "eth0"}}}
			},
		},
		{
			obj: &v1beta1.ServiceBGPStatus{ObjectMeta: meta("bgp")},
			status: func(o client.Object) {
				o.(*v1beta1.ServiceBGPStatus).Status = v1beta1.ServiceBGPStatusStatus{Node: "node-1", ServiceName: "web", ServiceNamespace: "shop", Peers: []string{"router-a", "router-b"}}
			},
		},
		{
			obj: &v1beta1.ConfigurationState{ObjectMeta: meta("controller")},
			status: func(o client.Object) {
				o.(*v1beta1.ConfigurationState).Status = v1beta1.ConfigurationStateStatus{
					Result:       v1beta1.ConfigurationResultInvalid,
					ErrorSummary: `IPAddressPool "b" overlaps IPAddressPool "a"`,
					Conditions: []metav1.Condition{{
						Type: "Valid", Status: metav1.ConditionFalse, Reason: "PoolOverlap", Message: "pools overlap", LastTransitionTime: at,
					}},
				}
			},
		},
	} {
		t.Run(reflect.TypeOf(tc.obj).Elem().Name(), func(t *testing.T) {
			if err := k.c.Create(ctx, tc.obj); err != nil {
				t.Fatalf("create: %v", err)
			}
			tc.status(tc.obj)
			want := fieldOf(tc.obj, "Status")
			if err := k.c.Status().Update(ctx, tc.obj); err != nil {
				t.Fatalf("update status: %v", err)
			}
			got := k.readBack(t, tc.obj)
			if diff := cmp.Diff(want, fieldOf(got, "Status"), timeEqual); diff != "" {
				t.Errorf("status read back differs (-written +read):\n%s", diff)
			}
		})
	}
}

// TestV1beta1PeerReadsAsV1beta2 applies BGPPeers written against the old
// version and reads them through the storage version.
func TestV1beta1PeerReadsAsV1beta2(t *testing.T) {
	k := startCluster(t)
	const ns = "crd-v1beta1"
	k.namespace(t, ns)
	manifest := `
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata:
  name: legacy
  namespace: crd-v1beta1
spec:
  myASN: 64512
  peerASN: 64513
  peerAddress: 10.0.0.1
  sourceAddress: 10.0.0.2
  peerPort: 1179
  holdTime: 30s
  keepaliveTime: 10s
  routerID: 10.0.0.2
  nodeSelectors:
  - matchLabels:
      rack: r1
    matchExpressions:
    - key: zone
      operator: In
      values: [east]
  password: pw
  bfdProfile: fast
  ebgpMultiHop: true
---
apiVersion: metallb.io/v1beta1
kind: BGPPeer
metadata:
  name: minimal
  namespace: crd-v1beta1
spec:
  myASN: 64512
  peerASN: 64513
  peerAddress: 10.0.0.9
`
	out, err := k.KubectlInput([]byte(manifest), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		name string
		want v1beta2.BGPPeerSpec
	}{
		{
			name: "legacy",
			want: v1beta2.BGPPeerSpec{
				MyASN: 64512, ASN: 64513, Address: "10.0.0.1", SrcAddress: "10.0.0.2", Port: 1179,
				HoldTime: &metav1.Duration{Duration: 30 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 10 * time.Second},
				RouterID: "10.0.0.2",
				NodeSelectors: []metav1.LabelSelector{{
					MatchLabels:      map[string]string{"rack": "r1"},
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"east"}}},
				}},
				Password: "pw", BFDProfile: "fast", EBGPMultiHop: true,
			},
		},
		{
			// v1beta2's defaults apply when the stored object is read.
			name: "minimal",
			want: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "10.0.0.9", Port: 179},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := &v1beta2.BGPPeer{}
			if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.name}, got); err != nil {
				t.Fatalf("get v1beta2: %v", err)
			}
			if diff := cmp.Diff(tc.want, got.Spec); diff != "" {
				t.Errorf("v1beta2 spec (-want +got):\n%s", diff)
			}
			old := &v1beta1.BGPPeer{}
			if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.name}, old); err != nil {
				t.Fatalf("get v1beta1: %v", err)
			}
			if old.Spec.Address != tc.want.Address || old.Spec.ASN != tc.want.ASN {
				t.Errorf("v1beta1 read = %+v, want address %s ASN %d", old.Spec, tc.want.Address, tc.want.ASN)
			}
		})
	}

	out, err = k.Kubectl("get", "bgppeers.v1beta2.metallb.io", "legacy", "-n", ns, "-o", "jsonpath={.apiVersion}")
	if err != nil {
		t.Fatal(err)
	}
	if out != "metallb.io/v1beta2" {
		t.Errorf("apiVersion read through kubectl = %q, want metallb.io/v1beta2", out)
	}
}

// TestAcceptedEdgeCases guards the validation rules against refusing values
// that are valid.
func TestAcceptedEdgeCases(t *testing.T) {
	k := startCluster(t)
	const ns = "crd-accept"
	k.namespace(t, ns)
	for _, tc := range acceptances {
		t.Run(tc.name, func(t *testing.T) {
			m := manifest(tc.apiVersion, tc.kind, objectName(tc.name), ns, tc.spec)
			if out, err := k.KubectlInput(m, "apply", "-f", "-"); err != nil {
				t.Errorf("kubectl apply refused a valid object: %v\n%s", err, m)
			} else if !strings.Contains(out, "created") && !strings.Contains(out, "configured") {
				t.Errorf("kubectl apply printed %q", out)
			}
		})
	}
}

// TestGracefulRestartIsFixed checks that enableGracefulRestart cannot be
// changed once the peer exists, since that would need a session reset.
func TestGracefulRestartIsFixed(t *testing.T) {
	k := startCluster(t)
	const ns = "crd-immutable"
	k.namespace(t, ns)
	spec := func(restart string) []byte {
		return manifest("v1beta2", "BGPPeer", "graceful", ns, peer+"enableGracefulRestart: "+restart)
	}
	if out, err := k.KubectlInput(spec("true"), "apply", "-f", "-"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	out, err := k.KubectlInput(spec("false"), "apply", "-f", "-")
	if err == nil {
		t.Fatal("kubectl apply changed enableGracefulRestart")
	}
	for _, w := range []string{"spec.enableGracefulRestart", "enableGracefulRestart cannot be changed after creation"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl output lacks %q:\n%s", w, out)
		}
	}
}

// The rendered installation manifest is accepted by the API server as it
// stands (server-side dry run: schemas, RBAC rules, workloads), and is what
// config/default renders, so the two never drift apart.
func TestDeployManifestApplies(t *testing.T) {
	k := startCluster(t)
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := k.Kubectl("kustomize", filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	committed, err := os.ReadFile(filepath.Join(root, "deploy", "ironlb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if rendered != string(committed) {
		t.Errorf("deploy/ironlb.yaml differs from config/default: run `make deploy-manifest`")
	}
	k.namespace(t, "metallb-system") // a dry run creates nothing to put the rest in
	if out, err := k.Kubectl("apply", "--dry-run=server", "-f", filepath.Join(root, "deploy", "ironlb.yaml")); err != nil {
		t.Fatalf("kubectl apply --dry-run=server -f deploy/ironlb.yaml: %v\n%s", err, out)
	}
}

// Package chart tests the Helm chart in this directory with the pinned Helm
// CLI (hack/helm.sh): it lints, it renders with its defaults the very
// objects config/default renders for `kubectl apply`, its values reach the
// flags and fields they name, and the API server accepts what it renders.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/speaker"
)

// helmVersion is the version hack/helm.sh builds by default.
const helmVersion = "v4.3.2"

// The release the tests render: the name and namespace the docs use.
const (
	release   = "ironlb"
	namespace = "metallb-system"
)

// helmOnlyLabels are the labels the chart adds to every object and
// config/ has no use for: they record which Helm release and chart
// version own the object. Nothing selects on them (selectors and pod
// labels stay those of config/), so leaving them out of the comparison
// hides no difference a running cluster would see.
var helmOnlyLabels = []string{
	"helm.sh/chart",
	"app.kubernetes.io/managed-by",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
}

// helmOnlyAnnotations are read by Helm alone: the keep policy on the CRDs
// (crds.keep) makes `helm uninstall` leave them, and with them every pool.
var helmOnlyAnnotations = []string{"helm.sh/resource-policy"}

func TestMain(m *testing.M) {
	// envtest logs through controller-runtime; nothing here reads it.
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

// helm finds the Helm CLI: $IRONLB_HELM (`make test` sets it), else the
// cache hack/helm.sh fills. Missing, it fails the test under CI, where
// .ci/run builds it, and skips it elsewhere saying how to build it.
func helm(t *testing.T) string {
	t.Helper()
	path := os.Getenv("IRONLB_HELM")
	if path == "" {
		cache, err := controlplane.CacheDir()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(cache, "helm", helmVersion, "helm")
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("helm not found at %s (.ci/run builds it with `bash hack/helm.sh`): %v", path, err)
		}
		t.Skipf("helm not found at %s: build it with `bash hack/helm.sh` (CI fails here instead): %v", path, err)
	}
	return path
}

// run runs a command and returns its standard output; standard error goes
// into the failure message.
func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	return runEnv(t, nil, name, args...)
}

// runEnv is run with extra environment variables.
func runEnv(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes()
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "charts", "ironlb") }

// render is `helm template ironlb charts/ironlb -n <ns> -f v1.yaml -f
// v2.yaml ...`, each values file given as YAML; none: the chart's defaults.
func render(t *testing.T, ns string, values ...string) []byte {
	t.Helper()
	args := []string{"template", release, chartDir(t), "--namespace", ns}
	for i, v := range values {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("values-%d.yaml", i))
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	return run(t, helm(t), args...)
}

// kustomize is `kubectl kustomize config/default`, with the kubectl of the
// test control plane's assets.
func kustomize(t *testing.T) []byte {
	t.Helper()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return run(t, filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(repoRoot(t), "config", "default"))
}

// objectKey identifies an object as the API server does.
func objectKey(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s %s/%s", o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
}

// objects decodes a multi-document manifest, keyed by objectKey, numbers
// as the API machinery reads them (int64 where integral).
func objects(t *testing.T, manifest []byte) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read manifest: %v", err)
		}
		j, err := sigsyaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("decode manifest document: %v\n%s", err, doc)
		}
		if s := string(bytes.TrimSpace(j)); s == "null" || s == "{}" {
			continue
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(j); err != nil {
			t.Fatalf("decode manifest document: %v\n%s", err, doc)
		}
		k := objectKey(o)
		if _, dup := out[k]; dup {
			t.Fatalf("manifest holds %s twice", k)
		}
		out[k] = o
	}
}

// withoutHelmMetadata drops the labels and annotations only Helm reads.
func withoutHelmMetadata(t *testing.T, objs map[string]*unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for k, o := range objs {
		o = o.DeepCopy()
		for field, drop := range map[string][]string{"labels": helmOnlyLabels, "annotations": helmOnlyAnnotations} {
			m, _, _ := unstructured.NestedStringMap(o.Object, "metadata", field)
			for _, key := range drop {
				delete(m, key)
			}
			// An object left with none has none, as in config/.
			if len(m) == 0 {
				unstructured.RemoveNestedField(o.Object, "metadata", field)
			} else if err := unstructured.SetNestedStringMap(o.Object, m, "metadata", field); err != nil {
				t.Fatalf("%s: set metadata.%s: %v", k, field, err)
			}
		}
		out[k] = o.Object
	}
	return out
}

// TestLint: `helm lint --strict` finds nothing, with the defaults and with
// the optional objects on.
func TestLint(t *testing.T) {
	h := helm(t)
	out := run(t, h, "lint", "--strict", chartDir(t), "--namespace", namespace)
	t.Logf("%s", out)
	run(t, h, "lint", "--strict", chartDir(t), "--namespace", namespace,
		"--set", "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true")
}

// TestDefaultsRenderConfig: with its defaults the chart installs what
// `kubectl apply -f deploy/ironlb.yaml` installs, object for object and
// field for field, so the two ways to install never drift apart.
func TestDefaultsRenderConfig(t *testing.T) {
	want := objects(t, kustomize(t))
	// The one exception: the Namespace. Helm installs into a namespace that
	// exists (`--create-namespace`); a chart that also rendered it would
	// fail to install into it.
	delete(want, "v1 Namespace /"+namespace)
	got := objects(t, render(t, namespace))
	if diff := cmp.Diff(withoutHelmMetadata(t, want), withoutHelmMetadata(t, got)); diff != "" {
		t.Errorf("helm template %s charts/ironlb -n %s differs from kubectl kustomize config/default (-kustomize +helm):\n%s", release, namespace, diff)
	}
}

// TestFilesMatchConfig: the CRDs and roles the chart renders from files/
// are byte for byte those of config/ (`make chart-files` copies them).
func TestFilesMatchConfig(t *testing.T) {
	root := repoRoot(t)
	pairs := map[string]string{
		"files/rbac/controller.yaml": "config/rbac/role.yaml",
		"files/rbac/speaker.yaml":    "config/rbac/speaker/role.yaml",
	}
	bases, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	for _, b := range bases {
		pairs["files/crds/"+filepath.Base(b)] = "config/crd/bases/" + filepath.Base(b)
	}
	copies, err := filepath.Glob(filepath.Join(chartDir(t), "files", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		rel, _ := filepath.Rel(chartDir(t), c)
		if _, ok := pairs[filepath.ToSlash(rel)]; !ok {
			t.Errorf("charts/ironlb/%s has no source in config/: run `make chart-files`", rel)
		}
	}
	for copy, source := range pairs {
		want, err := os.ReadFile(filepath.Join(root, source))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir(t), copy))
		if err != nil {
			t.Errorf("charts/ironlb/%s, the copy of %s: %v: run `make chart-files`", copy, source, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("charts/ironlb/%s differs from %s: run `make chart-files`", copy, source)
		}
	}
}

// decodeInto converts a rendered object into its typed form.
func decodeInto(t *testing.T, objs map[string]*unstructured.Unstructured, key string, into any) {
	t.Helper()
	o, ok := objs[key]
	if !ok {
		t.Fatalf("rendered manifest lacks %s; it has %v", key, keys(objs))
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		t.Fatalf("convert %s: %v", key, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// parseFlags parses a container's arguments with the flag set of the role
// it names, so a flag the chart renders that the binary lacks, or a value
// it refuses, fails here rather than in a crash-looping pod.
func parseFlags(t *testing.T, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("container has no arguments")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch args[0] {
	case "controller":
		new(controllers.Options).BindFlags(fs)
	case "speaker":
		new(speaker.Options).BindFlags(fs)
	default:
		t.Fatalf("unknown role %q", args[0])
	}
	if err := fs.Parse(args[1:]); err != nil {
		t.Errorf("ironlb %s refuses the chart's arguments %q: %v", args[0], args[1:], err)
	}
}

// nonDefaults sets every value users are expected to change.
const nonDefaults = `
image: {repository: registry.example/ironlb, tag: v9.9.9, pullPolicy: Always}
loadBalancerClass: example.com/ironlb
ipMode: VIP
crds: {enabled: false}
memberlist: {port: 7947, secretWait: 30s, allowUnencrypted: true}
controller:
  replicas: 3
  leaderElection: false
  resources: {requests: {cpu: 100m}}
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
speaker:
  forwarder: "off"
  tolerations: [{operator: Exists}]
  nodeSelector: {ironlb.example/speaker: "true", kubernetes.io/os: null}
  priorityClassName: system-node-critical
  resources: {limits: {memory: 512Mi}}
metrics:
  port: 9100
  serviceMonitor: {enabled: true, labels: {release: prom}}
  prometheusRule: {enabled: true}
`

// TestValuesReachObjects: each value lands in the field or flag it names,
// in the release namespace, and every rendered flag is one ironlb has.
func TestValuesReachObjects(t *testing.T) {
	const ns = "lb"
	objs := objects(t, render(t, ns, nonDefaults))

	var ctl appsv1.Deployment
	decodeInto(t, objs, "apps/v1 Deployment "+ns+"/controller", &ctl)
	var spk appsv1.DaemonSet
	decodeInto(t, objs, "apps/v1 DaemonSet "+ns+"/speaker", &spk)
	c, s := ctl.Spec.Template.Spec.Containers[0], spk.Spec.Template.Spec.Containers[0]

	for _, ct := range []corev1.Container{c, s} {
		if ct.Image != "registry.example/ironlb:v9.9.9" || ct.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("%s: image %q pull policy %q, want registry.example/ironlb:v9.9.9 Always", ct.Name, ct.Image, ct.ImagePullPolicy)
		}
		parseFlags(t, ct.Args)
	}
	wantArgs := map[string][]string{
		"controller": {"controller", "--leader-elect=false", "--lb-class=example.com/ironlb", "--ip-mode=VIP", "--metrics-bind-address=:9100"},
		"speaker":    {"speaker", "--lb-class=example.com/ironlb", "--forwarder=off", "--memberlist-port=7947", "--memberlist-allow-unencrypted", "--memberlist-secret-wait=30s", "--metrics-bind-address=:9100"},
	}
	for _, ct := range []corev1.Container{c, s} {
		if diff := cmp.Diff(wantArgs[ct.Name], ct.Args); diff != "" {
			t.Errorf("%s args (-want +got):\n%s", ct.Name, diff)
		}
	}
	if r := ctl.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("controller replicas %v, want 3", r)
	}
	if got := c.Resources.Requests.Cpu().String(); got != "100m" {
		t.Errorf("controller cpu request %s, want 100m", got)
	}
	if got := s.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("speaker memory limit %s, want 512Mi", got)
	}
	// Helm merges maps: the default kubernetes.io/os stays beside the
	// user's selector unless set to null.
	if diff := cmp.Diff(map[string]string{"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}, ctl.Spec.Template.Spec.NodeSelector); diff != "" {
		t.Errorf("controller nodeSelector (-want +got):\n%s", diff)
	}
	pod := spk.Spec.Template.Spec
	if diff := cmp.Diff([]corev1.Toleration{{Operator: corev1.TolerationOpExists}}, pod.Tolerations); diff != "" {
		t.Errorf("speaker tolerations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"ironlb.example/speaker": "true"}, pod.NodeSelector); diff != "" {
		t.Errorf("speaker nodeSelector (-want +got):\n%s", diff)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("speaker priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	ports := map[string]int32{}
	for _, p := range s.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{"memberlist-tcp": 7947, "memberlist-udp": 7947, "metrics": 9100}, ports); diff != "" {
		t.Errorf("speaker ports (-want +got):\n%s", diff)
	}

	for k, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			t.Errorf("crds.enabled=false still renders %s", k)
		}
		if o.GetNamespace() != "" && o.GetNamespace() != ns {
			t.Errorf("%s is outside the release namespace %s", k, ns)
		}
	}
	for _, role := range []string{"controller", "speaker"} {
		b := objs["rbac.authorization.k8s.io/v1 ClusterRoleBinding /ironlb-"+role]
		subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
		if len(subjects) != 1 || subjects[0].(map[string]any)["namespace"] != ns {
			t.Errorf("ClusterRoleBinding ironlb-%s subjects %v, want the ServiceAccount in %s", role, subjects, ns)
		}
	}

	binding := objs["admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding /ironlb-configuration-namespace"]
	if binding == nil {
		t.Errorf("no ValidatingAdmissionPolicyBinding; rendered %v", keys(objs))
	} else if name, _, _ := unstructured.NestedString(binding.Object, "spec", "paramRef", "name"); name != ns {
		t.Errorf("admission policy binding paramRef.name %q, want the release namespace %s", name, ns)
	}

	var svc corev1.Service
	decodeInto(t, objs, "v1 Service "+ns+"/speaker-metrics", &svc)
	if p := svc.Spec.Ports[0]; p.Port != 9100 || p.TargetPort.String() != "metrics" {
		t.Errorf("speaker-metrics port %d -> %s, want 9100 -> metrics", p.Port, p.TargetPort.String())
	}
	mon := objs["monitoring.coreos.com/v1 ServiceMonitor "+ns+"/ironlb"]
	if mon == nil {
		t.Fatalf("metrics.serviceMonitor.enabled renders no ServiceMonitor; rendered %v", keys(objs))
	}
	if mon.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v lack release=prom", mon.GetLabels())
	}
	endpoints, _, _ := unstructured.NestedSlice(mon.Object, "spec", "endpoints")
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" {
		t.Errorf("ServiceMonitor endpoints %v, want the metrics port", endpoints)
	}
	rule := objs["monitoring.coreos.com/v1 PrometheusRule "+ns+"/ironlb"]
	if rule == nil {
		t.Fatalf("metrics.prometheusRule.enabled renders no PrometheusRule; rendered %v", keys(objs))
	}
	checkRules(t, rule)
}

// TestSchemaRefusesMistakes: values.schema.json stops a misspelt key or a
// value ironlb would refuse at `helm template` (and install, upgrade),
// naming the value, before anything reaches the cluster.
func TestSchemaRefusesMistakes(t *testing.T) {
	h := helm(t)
	for _, tc := range []struct{ set, want string }{
		{"speaker.forwarder=ipvss", "/speaker/forwarder"},
		{"speaker.forwarderr=ipvs", "'forwarderr' not allowed"},
		{"ipMode=proxy", "/ipMode"},
		{"memberlist.port=70000", "/memberlist/port"},
		{"loadBalancerClas=x", "'loadBalancerClas' not allowed"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			out, err := exec.Command(h, "template", release, chartDir(t), "--namespace", namespace, "--set", tc.set).CombinedOutput()
			if err == nil {
				t.Fatalf("helm template --set %s rendered; want it refused", tc.set)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("helm template --set %s: %s\nwant the message to name %q", tc.set, out, tc.want)
			}
		})
	}
}

// TestOptionalObjectsOffByDefault: nothing that needs the Prometheus
// operator's CRDs is rendered unless asked for.
func TestOptionalObjectsOffByDefault(t *testing.T) {
	for k := range objects(t, render(t, namespace)) {
		if strings.HasPrefix(k, "monitoring.coreos.com/") {
			t.Errorf("defaults render %s", k)
		}
	}
}

// checkRules runs `promtool check rules` on the PrometheusRule's groups, so
// a broken PromQL expression fails here and not in the user's Prometheus.
func checkRules(t *testing.T, rule *unstructured.Unstructured) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (.ci/run installs Debian's prometheus package): %v", err)
		}
		t.Skipf("promtool not found: install Debian's prometheus package (CI fails here instead): %v", err)
	}
	spec, _, _ := unstructured.NestedMap(rule.Object, "spec")
	data, err := sigsyaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, promtool, "check", "rules", f)
	t.Logf("%s", out)
	tests := filepath.Join(filepath.Dir(f), "rules_test.yaml")
	if err := os.WriteFile(tests, []byte(alertTests), 0o600); err != nil {
		t.Fatal(err)
	}
	out = run(t, promtool, "test", "rules", tests)
	t.Logf("%s", out)
}

// alertTests is a promtool unit test of the PrometheusRule rendered in
// namespace lb: which alerts fire on which series, with their texts. Two
// speakers and a controller are scraped; node-a's BGP session to peer tor
// drops after a minute, and node-b sees only itself in memberlist.
const alertTests = `
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  - series: 'up{namespace="lb", job="speaker-metrics", instance="node-a:9100"}'
    values: '1x10'
  - series: 'up{namespace="lb", job="speaker-metrics", instance="node-b:9100"}'
    values: '1x10'
  - series: 'up{namespace="lb", job="controller-metrics", instance="ctl:9100"}'
    values: '1x10'
  - series: 'ironlb_bgp_session_up{namespace="lb", instance="node-a:9100", peer="tor"}'
    values: '1 0x10'
  - series: 'ironlb_election_members{namespace="lb", instance="node-a:9100"}'
    values: '2x10'
  - series: 'ironlb_election_members{namespace="lb", instance="node-b:9100"}'
    values: '1x10'
  alert_rule_test:
  - eval_time: 4m
    alertname: IronLBBGPSessionDown
    exp_alerts: []
  - eval_time: 10m
    alertname: IronLBBGPSessionDown
    exp_alerts:
    - exp_labels: {severity: warning, namespace: lb, instance: "node-a:9100", peer: tor}
      exp_annotations:
        summary: BGP session from node-a:9100 to peer tor is down
        description: The router no longer learns this node as a next hop for the Service addresses.
  - eval_time: 10m
    alertname: IronLBMemberlistSplit
    exp_alerts:
    - exp_labels: {severity: warning, namespace: lb, instance: "node-b:9100"}
      exp_annotations:
        summary: speaker node-b:9100 sees 1 memberlist members, fewer than the speakers running
        description: Speakers that cannot see each other may both answer for the same layer-2 address; check that the memberlist port is open between nodes.
  - eval_time: 10m
    alertname: IronLBSpeakerDown
    exp_alerts: []
  - eval_time: 10m
    alertname: IronLBControllerDown
    exp_alerts: []
`

// TestRenderedManifestsApply: the API server accepts what the chart
// renders, with its defaults and with every value changed (server-side
// dry run). The monitoring.coreos.com objects are left out: the test
// server has no Prometheus operator CRDs.
func TestRenderedManifestsApply(t *testing.T) {
	cp := controlplane.Start(t)
	noMonitoring := "metrics: {serviceMonitor: {enabled: false}, prometheusRule: {enabled: false}}"
	for _, tc := range []struct {
		name, ns string
		values   []string
	}{
		{"defaults", namespace, nil},
		{"non-defaults", "lb", []string{nonDefaults, noMonitoring}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manifest := render(t, tc.ns, tc.values...)
			if out, err := cp.ApplyDryRun(manifest, tc.ns); err != nil {
				t.Fatalf("helm template | kubectl apply --server-side --dry-run=server -f -: %v\n%s", err, out)
			}
		})
	}
}

// cluster runs helm and kubectl, and the shell commands of docs/install.md,
// against a control plane started without ironlb's CRDs, as a cluster
// before the first install is.
type cluster struct {
	t    *testing.T
	cp   *controlplane.Env
	env  []string
	helm string
}

func startEmptyCluster(t *testing.T) *cluster {
	t.Helper()
	h := helm(t)
	noCRDs := t.TempDir()
	cp, err := controlplane.StartWith(controlplane.Options{CRDDirectory: noCRDs})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	home := t.TempDir()
	return &cluster{t: t, cp: cp, helm: h, env: []string{
		"KUBECONFIG=" + cp.Kubeconfig,
		"PATH=" + cp.AssetsDir + string(os.PathListSeparator) + filepath.Dir(h) + string(os.PathListSeparator) + os.Getenv("PATH"),
		// Helm's own state stays in the test's directory.
		"HELM_CACHE_HOME=" + filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
		"HELM_DATA_HOME=" + filepath.Join(home, "data"),
	}}
}

// sh runs a shell snippet, as docs/install.md gives it, in the repository
// root with helm and kubectl on PATH.
func (c *cluster) sh(script string) string {
	c.t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = repoRoot(c.t)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// exists tells whether `kubectl get` finds the object.
func (c *cluster) exists(args ...string) bool {
	c.t.Helper()
	out, err := c.cp.Kubectl(append([]string{"get", "--ignore-not-found", "-o", "name"}, args...)...)
	if err != nil {
		c.t.Fatalf("kubectl get %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(out) != ""
}

// established waits until the API server serves the CRDs Helm just
// created (Helm does not wait for templated CRDs).
func (c *cluster) established() {
	c.t.Helper()
	c.sh("kubectl wait --for condition=established --timeout=60s crd -l app.kubernetes.io/managed-by=Helm")
}

// TestInstallUpgradeUninstall follows docs/install.md with the pinned Helm
// against a real API server: install, upgrade with a changed value, and
// uninstall, which keeps the CRDs and the pools (crds.keep).
func TestInstallUpgradeUninstall(t *testing.T) {
	c := startEmptyCluster(t)
	c.sh("kubectl create namespace metallb-system")
	c.sh("kubectl label namespace metallb-system pod-security.kubernetes.io/enforce=privileged")
	c.sh("helm install ironlb charts/ironlb -n metallb-system")
	c.established()
	c.sh("kubectl apply -f examples/01-l2-first-pool.yaml")

	c.sh("helm upgrade ironlb charts/ironlb -n metallb-system --set loadBalancerClass=example.com/ironlb")
	args, err := c.cp.Kubectl("get", "deployment/controller", "-n", "metallb-system", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	if err != nil || !strings.Contains(args, "--lb-class=example.com/ironlb") {
		t.Errorf("after helm upgrade --set loadBalancerClass the controller's args are %s (%v)", args, err)
	}

	// Handing the CRDs to someone else: the chart stops rendering them,
	// the keep policy leaves them, and they are applied by hand.
	c.sh("helm upgrade ironlb charts/ironlb -n metallb-system --set crds.enabled=false")
	if !c.exists("crd/ipaddresspools.metallb.io") || !c.exists("ipaddresspool/first-pool", "-n", "metallb-system") {
		t.Error("helm upgrade --set crds.enabled=false deleted the CRDs or the pool; crds.keep should leave them")
	}
	c.sh("kubectl apply --server-side -f charts/ironlb/files/crds/")
	c.sh("helm upgrade ironlb charts/ironlb -n metallb-system")

	c.sh("helm uninstall ironlb -n metallb-system")
	if c.exists("deployment/controller", "-n", "metallb-system") {
		t.Error("helm uninstall left the controller Deployment")
	}
	if !c.exists("crd/ipaddresspools.metallb.io") || !c.exists("ipaddresspool/first-pool", "-n", "metallb-system") {
		t.Error("helm uninstall deleted the CRDs or the pool; crds.keep should leave them")
	}
	// Installing again adopts the CRDs it left.
	c.sh("helm install ironlb charts/ironlb -n metallb-system")
}

// TestTakeOverFromHelmRelease follows the hand-over of docs/install.md:
// the CRDs belong to another release (MetalLB's chart templates its CRDs,
// as "metallb" here does with keep off); the doc's annotations move them to
// the ironlb release, so uninstalling the other release leaves them and
// the pools, and `helm install ironlb` adopts them.
func TestTakeOverFromHelmRelease(t *testing.T) {
	c := startEmptyCluster(t)
	c.sh("helm install metallb charts/ironlb -n metallb-system --create-namespace --set crds.keep=false")
	c.established()
	c.sh("kubectl apply -f examples/01-l2-first-pool.yaml")
	c.sh(`for crd in $(kubectl get crd -o name | grep '\.metallb\.io$'); do
  kubectl annotate --overwrite "$crd" meta.helm.sh/release-name=ironlb meta.helm.sh/release-namespace=metallb-system
  kubectl label --overwrite "$crd" app.kubernetes.io/managed-by=Helm
done`)
	c.sh("helm uninstall metallb -n metallb-system")
	if !c.exists("crd/ipaddresspools.metallb.io") || !c.exists("ipaddresspool/first-pool", "-n", "metallb-system") {
		t.Fatal("helm uninstall metallb deleted the CRDs or the pool that were handed over to ironlb")
	}
	c.sh("helm install ironlb charts/ironlb -n metallb-system")
	owner, err := c.cp.Kubectl("get", "crd/ipaddresspools.metallb.io", "-o", "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}")
	if err != nil || owner != "ironlb" {
		t.Errorf("CRD owner after helm install ironlb: %q (%v), want ironlb", owner, err)
	}
}

// TestRestoreAfterHandOver follows the other way of docs/install.md: the
// CRDs and the configuration go with the other release, and come back from
// the backup before ironlb's controller runs.
func TestRestoreAfterHandOver(t *testing.T) {
	c := startEmptyCluster(t)
	c.env = append(c.env, "BACKUP="+filepath.Join(t.TempDir(), "backup.yaml"))
	c.sh("helm install metallb charts/ironlb -n metallb-system --create-namespace --set crds.keep=false")
	c.established()
	c.sh("kubectl apply -f examples/01-l2-first-pool.yaml")
	c.sh(`kubectl get ipaddresspools,l2advertisements,bgppeers,bgpadvertisements,communities,bfdprofiles \
  -n metallb-system -o yaml > "$BACKUP"`)
	c.sh("helm uninstall metallb -n metallb-system")
	if c.exists("crd/ipaddresspools.metallb.io") {
		t.Fatal("helm uninstall metallb left its CRDs: this test no longer loses the configuration")
	}
	c.sh("helm install ironlb charts/ironlb -n metallb-system --set controller.replicas=0")
	c.established()
	c.sh(`kubectl apply -f "$BACKUP"`)
	c.sh("helm upgrade ironlb charts/ironlb -n metallb-system --reuse-values --set controller.replicas=2")
	if !c.exists("ipaddresspool/first-pool", "-n", "metallb-system") || !c.exists("l2advertisement/example", "-n", "metallb-system") {
		t.Error("kubectl apply -f backup.yaml did not restore the pool and its advertisement")
	}
	replicas, err := c.cp.Kubectl("get", "deployment/controller", "-n", "metallb-system", "-o", "jsonpath={.spec.replicas}")
	if err != nil || replicas != "2" {
		t.Errorf("controller replicas after the upgrade: %q (%v), want 2", replicas, err)
	}
}

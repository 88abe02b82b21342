// Package admission_test proves, against the real API server, that the
// ValidatingAdmissionPolicy of this directory refuses metallb.io
// configuration outside ironlb's namespace, naming the namespace to use.
package admission_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/controlplane"
)

// configKinds are the kinds the policy covers, each with a valid spec.
var configKinds = []struct{ apiVersion, kind, spec string }{
	{"v1beta1", "IPAddressPool", "addresses: [172.25.254.50/32]"},
	{"v1beta1", "L2Advertisement", "ipAddressPools: [a]"},
	{"v1beta1", "BGPAdvertisement", "ipAddressPools: [a]"},
	{"v1beta1", "Community", "communities: [{name: gold, value: '65000:1'}]"},
	{"v1beta1", "BFDProfile", "receiveInterval: 300"},
	{"v1beta2", "BGPPeer", "myASN: 64512\n  peerASN: 64513\n  peerAddress: 172.25.254.1"},
	{"v1beta1", "BGPPeer", "myASN: 64512\n  peerASN: 64513\n  peerAddress: 172.25.254.1"},
}

func manifest(apiVersion, kind, name, namespace, spec string) []byte {
	return fmt.Appendf(nil, "apiVersion: metallb.io/%s\nkind: %s\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  %s\n",
		apiVersion, kind, name, namespace, spec)
}

// refusedWithin applies m (a server-side dry run, so nothing is stored)
// until the API server refuses it with every fragment in the message, or
// the deadline passes: a new policy or binding takes effect once the API
// server's informers have seen it, a moment after it is created.
func refusedWithin(t *testing.T, env *controlplane.Env, m []byte, fragments ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		var err error
		out, err = env.KubectlInput(m, "apply", "--dry-run=server", "-f", "-")
		if err != nil && containsAll(out, fragments) {
			return out
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("not refused with %q within 30s; last output:\n%s\n%s", fragments, out, m)
	return ""
}

func containsAll(s string, fragments []string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}

func TestPolicyRefusesConfigurationOutsideTheNamespace(t *testing.T) {
	env := controlplane.Start(t)
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"metallb-system", "lb-config"} {
		if out, err := env.Kubectl("create", "namespace", ns); err != nil {
			t.Fatalf("create namespace %s: %v\n%s", ns, err, out)
		}
	}
	if out, err := env.Kubectl("apply", "-k", filepath.Join(root, "config", "admission")); err != nil {
		t.Fatalf("kubectl apply -k config/admission: %v\n%s", err, out)
	}

	// A pool applied in default is refused, naming metallb-system; so is
	// every other configuration kind.
	out := refusedWithin(t, env, manifest("v1beta1", "IPAddressPool", "pool", "default", configKinds[0].spec),
		"resource must be created in metallb-system namespace")
	t.Log(strings.TrimSpace(out))
	for _, k := range configKinds[1:] {
		t.Run(k.kind+" "+k.apiVersion, func(t *testing.T) {
			m := manifest(k.apiVersion, k.kind, "obj", "default", k.spec)
			out, err := env.KubectlInput(m, "apply", "-f", "-")
			if err == nil || !containsAll(out, []string{"resource must be created in metallb-system namespace", k.kind + " objects only from metallb-system"}) {
				t.Errorf("kubectl apply in default: err %v, output:\n%s", err, out)
			}
		})
	}

	// In metallb-system every kind is accepted.
	for _, k := range configKinds {
		m := manifest(k.apiVersion, k.kind, "a-"+strings.ToLower(k.kind)+"-"+k.apiVersion, "metallb-system", k.spec)
		if out, err := env.KubectlInput(m, "apply", "-f", "-"); err != nil {
			t.Errorf("kubectl apply %s in metallb-system: %v\n%s", k.kind, err, out)
		}
	}

	// --namespace lb-config: the binding's paramRef names the namespace,
	// and the policy follows it.
	patch := `[{"op":"replace","path":"/spec/paramRef/name","value":"lb-config"}]`
	if out, err := env.Kubectl("patch", "validatingadmissionpolicybinding", "ironlb-configuration-namespace", "--type=json", "-p", patch); err != nil {
		t.Fatalf("patch binding: %v\n%s", err, out)
	}
	refusedWithin(t, env, manifest("v1beta1", "IPAddressPool", "pool2", "metallb-system", configKinds[0].spec),
		"resource must be created in lb-config namespace")
	if out, err := env.KubectlInput(manifest("v1beta1", "IPAddressPool", "pool2", "lb-config", configKinds[0].spec), "apply", "-f", "-"); err != nil {
		t.Errorf("kubectl apply in lb-config: %v\n%s", err, out)
	}

	// Existing objects stay editable: the policy checks creation only, as
	// MetalLB's webhook does, so an object left in a wrong namespace can
	// still be mended or have its finalizers removed.
	if out, err := env.Kubectl("label", "ipaddresspool", "-n", "metallb-system", "a-ipaddresspool-v1beta1", "edited=yes"); err != nil {
		t.Errorf("edit an existing pool outside the configured namespace: %v\n%s", err, out)
	}
}

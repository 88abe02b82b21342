package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// Verdicts that differ from a plain "Invalid" (issue 17): references to
// objects that do not exist yet are warnings, and configuration outside
// ironlb's namespace is reported on the object.

// waitCondition waits until ConfigurationState "controller" in namespace
// has condition typ with status, its message holding every fragment (and
// none of the fragments prefixed "!"), and result.
func waitCondition(t *testing.T, env *controlplane.Env, namespace, result, typ string, status metav1.ConditionStatus, fragments ...string) {
	t.Helper()
	eventually(t, 30*time.Second, func() string {
		var st v1beta1.ConfigurationState
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: controllers.ConfigurationStateName}, &st); err != nil {
			return err.Error()
		}
		if string(st.Status.Result) != result {
			return fmt.Sprintf("ConfigurationState result = %q (%q), want %q", st.Status.Result, st.Status.ErrorSummary, result)
		}
		for _, c := range st.Status.Conditions {
			if c.Type != typ {
				continue
			}
			if c.Status != status {
				return fmt.Sprintf("condition %s = %s (%q), want %s", typ, c.Status, c.Message, status)
			}
			for _, f := range fragments {
				if absent, ok := strings.CutPrefix(f, "!"); ok {
					if strings.Contains(c.Message, absent) {
						return fmt.Sprintf("condition %s message %q still has %q", typ, c.Message, absent)
					}
				} else if !strings.Contains(c.Message, f) {
					return fmt.Sprintf("condition %s message %q lacks %q", typ, c.Message, f)
				}
			}
			return ""
		}
		return fmt.Sprintf("no condition %s in %+v", typ, st.Status.Conditions)
	})
}

func TestDanglingReferencesAreWarnings(t *testing.T) {
	env := newEnv(t)
	runController(t, env)
	create(t, env, pool("now", "172.25.254.50/32"),
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "adv"},
			Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []string{"now", "later"}}},
		&v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bgp"},
			Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"now"}, Peers: []string{"tor-later"}}})

	// Valid, with the names in the DanglingReferences condition and an
	// Event on each referring object.
	waitCondition(t, env, ns, "Valid", controllers.ConditionDanglingReferences, metav1.ConditionTrue, "IPAddressPool later", "BGPPeer tor-later", "does not exist yet")
	waitConfigResult(t, env, "Valid")
	waitEvent(t, env, ns, "adv", controllers.ReasonDanglingReference, `spec.ipAddressPools[1] "later"`, "does not exist yet")
	waitEvent(t, env, ns, "bgp", controllers.ReasonDanglingReference, `spec.peers[0] "tor-later"`)

	// The rest is in force: the pool that exists serves Services.
	create(t, env, lbService("default", "svc"))
	waitIngress(t, env, "default", "svc", "172.25.254.50")

	// The reference resolves when the pool appears; the BGP peer is still
	// missing, so the condition stays, naming only the peer.
	create(t, env, pool("later", "172.25.254.60/32"))
	waitCondition(t, env, ns, "Valid", controllers.ConditionDanglingReferences, metav1.ConditionTrue, "BGPPeer tor-later", "!IPAddressPool later")
	create(t, env, lbService("default", "svc2", withAnnotation("metallb.io/address-pool", "later")))
	waitIngress(t, env, "default", "svc2", "172.25.254.60")

	// With the peer created too, nothing dangles.
	create(t, env, &v1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tor-later"},
		Spec: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "172.25.254.1"}})
	waitCondition(t, env, ns, "Valid", controllers.ConditionDanglingReferences, metav1.ConditionFalse)

	// What really is invalid still makes the configuration Invalid: a BGP
	// advertisement with an unknown community alias.
	create(t, env, &v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bad-community"},
		Spec: v1beta1.BGPAdvertisementSpec{Communities: []string{"no-such-alias"}}})
	waitConfigResult(t, env, "Invalid", `"no-such-alias" is neither a community value nor an alias`)
}

func TestConfigurationOutsideTheNamespaceIsReported(t *testing.T) {
	for _, tc := range []struct {
		name, configNS, strayNS string
	}{
		{"default namespace", ns, "default"},
		// --namespace moves the configuration: then metallb-system is the
		// wrong place, and the Event names the configured namespace.
		{"configured namespace", "lb-config", ns},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			if tc.configNS != ns {
				create(t, env, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.configNS}})
			}
			runControllerWith(t, env, controllers.Options{Namespace: tc.configNS})
			stray := pool("stray", "172.25.254.70/32")
			stray.Namespace = tc.strayNS
			create(t, env, stray, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Namespace: tc.strayNS, Name: "stray-adv"}})
			want := "create it in " + tc.configNS
			waitEvent(t, env, tc.strayNS, "stray", controllers.ReasonWrongNamespace, "IPAddressPool "+tc.strayNS+"/stray has no effect", want)
			waitEvent(t, env, tc.strayNS, "stray-adv", controllers.ReasonWrongNamespace, "L2Advertisement "+tc.strayNS+"/stray-adv has no effect", want)

			// It never takes effect: a Service asking for it is told the
			// pool is unknown.
			create(t, env, lbService("default", "wants-stray", withAnnotation("metallb.io/address-pool", "stray")))
			waitEvent(t, env, "default", "wants-stray", controllers.ReasonAllocationFailed, `"stray"`)

			// Told once per generation: a spec change tells again (the
			// recorder folds the repeat into the same Event, count 2).
			if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(stray), stray); err != nil {
				t.Fatal(err)
			}
			stray.Spec.Addresses = []string{"172.25.254.71/32"}
			if err := env.Client.Update(context.Background(), stray); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, func() string {
				n := wrongNamespaceCount(t, env, tc.strayNS, "stray")
				if n != 2 {
					return fmt.Sprintf("WrongNamespace events on the pool counted %d, want 2 after one spec change", n)
				}
				return ""
			})
		})
	}
}

// wrongNamespaceCount sums the counts of WrongNamespace Events on name.
func wrongNamespaceCount(t *testing.T, env *controlplane.Env, namespace, name string) int32 {
	t.Helper()
	var evs corev1.EventList
	if err := env.Client.List(context.Background(), &evs, client.InNamespace(namespace)); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var n int32
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name && e.Reason == controllers.ReasonWrongNamespace {
			n += max(e.Count, 1)
		}
	}
	return n
}

package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

const ns = "metallb-system"

func TestMain(m *testing.M) {
	// Controller logs go to stderr, shown by `go test -v` and on failure.
	level := zapcore.ErrorLevel
	if os.Getenv("IRONLB_TEST_LOG") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))
	os.Exit(m.Run())
}

// runController starts the controller role in-process against env and
// returns a function that stops it and waits until it has.
func runController(t *testing.T, env *controlplane.Env) (stop func()) {
	t.Helper()
	return runControllerWith(t, env, controllers.Options{})
}

// newEnv starts a control plane with the metallb-system namespace.
func newEnv(t *testing.T) *controlplane.Env {
	t.Helper()
	env := controlplane.Start(t)
	create(t, env, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	return env
}

func create(t *testing.T, env *controlplane.Env, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

func pool(name string, addrs ...string) *v1beta1.IPAddressPool {
	return &v1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: addrs},
	}
}

type svcOpt func(*corev1.Service)

func lbService(namespace, name string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withAnnotation(k, v string) svcOpt {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func withPort(port int32, proto corev1.Protocol) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: port, Protocol: proto, TargetPort: intstr.FromInt32(port)}}
	}
}

// eventually polls cond until it returns "" or the deadline passes; the last
// complaint is the failure message.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("condition not met within %v: %s", timeout, last)
}

// ingress returns the Service's published addresses.
func ingress(t *testing.T, env *controlplane.Env, namespace, name string) []string {
	t.Helper()
	var s corev1.Service
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
		return []string{"<" + err.Error() + ">"}
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

// waitIngress waits until the Service publishes exactly want.
func waitIngress(t *testing.T, env *controlplane.Env, namespace, name string, want ...string) {
	t.Helper()
	eventually(t, 30*time.Second, func() string {
		got := ingress(t, env, namespace, name)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Sprintf("service %s/%s ingress = %v, want %v", namespace, name, got, want)
		}
		return ""
	})
}

// waitEvent waits for an Event with reason on the object whose message
// contains every fragment.
func waitEvent(t *testing.T, env *controlplane.Env, namespace, name, reason string, fragments ...string) {
	t.Helper()
	eventually(t, 30*time.Second, func() string {
		var evs corev1.EventList
		if err := env.Client.List(context.Background(), &evs, client.InNamespace(namespace)); err != nil {
			return err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Name != name || e.Reason != reason {
				continue
			}
			seen = append(seen, e.Message)
			ok := true
			for _, f := range fragments {
				ok = ok && strings.Contains(e.Message, f)
			}
			if ok {
				return ""
			}
		}
		return fmt.Sprintf("no %s event on %s/%s containing %q; seen %q", reason, namespace, name, fragments, seen)
	})
}

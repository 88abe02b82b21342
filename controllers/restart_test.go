package controllers_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A controller restarted again and again while Services come and go must
// never move a published address nor hand one address to two Services.
func TestRestartsKeepAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1,000 Services")
	}
	env := newEnv(t)
	create(t, env, pool("big", "172.25.0.0/20"))
	stop := runController(t, env)

	const initial = 1000
	for i := range initial {
		create(t, env, lbService("default", fmt.Sprintf("s%04d", i)))
	}
	published := waitAllAssigned(t, env.Client, initial)

	rng := rand.New(rand.NewPCG(1, 2))
	next := initial
	for round := range 5 {
		stop()
		// While no controller runs, and while the next one starts, Services
		// are created and deleted.
		for range 20 {
			create(t, env, lbService("default", fmt.Sprintf("s%04d", next)))
			next++
		}
		stop = runController(t, env)
		for range 20 {
			victim := fmt.Sprintf("s%04d", rng.IntN(next))
			err := env.Client.Delete(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: victim}})
			if client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
			delete(published, victim)
			create(t, env, lbService("default", fmt.Sprintf("s%04d", next)))
			next++
		}
		now := waitAllAssigned(t, env.Client, -1)
		for name, ip := range published {
			if now[name] != ip {
				t.Fatalf("round %d: service %s moved from %s to %s", round, name, ip, now[name])
			}
		}
		published = now
	}
}

// waitAllAssigned waits until every LoadBalancer Service in default has one
// address (and, when n >= 0, there are n of them), checks no address is
// held twice, and returns name -> address.
func waitAllAssigned(t *testing.T, env interface {
	List(context.Context, client.ObjectList, ...client.ListOption) error
}, n int) map[string]string {
	t.Helper()
	var out map[string]string
	eventually(t, 3*time.Minute, func() string {
		var svcs corev1.ServiceList
		if err := env.List(context.Background(), &svcs, client.InNamespace("default")); err != nil {
			return err.Error()
		}
		out = map[string]string{}
		holder := map[string]string{}
		count := 0
		for _, s := range svcs.Items {
			if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			count++
			if len(s.Status.LoadBalancer.Ingress) != 1 {
				return fmt.Sprintf("service %s has ingress %v", s.Name, s.Status.LoadBalancer.Ingress)
			}
			ip := s.Status.LoadBalancer.Ingress[0].IP
			if other, dup := holder[ip]; dup {
				t.Fatalf("address %s held by both %s and %s", ip, other, s.Name)
			}
			holder[ip] = s.Name
			out[s.Name] = ip
		}
		if n >= 0 && count != n {
			return fmt.Sprintf("%d services, want %d", count, n)
		}
		return ""
	})
	return out
}

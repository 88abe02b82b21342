package controllers_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// The controller creates the memberlist Secret with a random key when it
// is missing, and leaves an existing one (a user's own key) alone, across
// restarts.
func TestMemberlistSecret(t *testing.T) {
	env := newEnv(t)
	stop := runController(t, env)
	var created corev1.Secret
	eventually(t, 30*time.Second, func() string {
		created = memberlistSecret(t, env)
		if created.Name == "" {
			return "no secret memberlist in " + ns
		}
		return ""
	})
	key := created.Data[controllers.MemberlistSecretKey]
	raw, err := base64.StdEncoding.DecodeString(string(key))
	if err != nil || len(raw) != 128 {
		t.Errorf("secretkey is %d bytes, want 128 random bytes in base64 (decoded %d, %v)", len(key), len(raw), err)
	}
	stop()

	// A key of the user's own, put in place while no controller runs.
	created.Data = map[string][]byte{controllers.MemberlistSecretKey: []byte("the-users-own-key-of-at-least-32-bytes")}
	if err := env.Client.Update(context.Background(), &created); err != nil {
		t.Fatal(err)
	}
	before := memberlistSecret(t, env)
	// A restarted controller runs everything it starts with; a Service it
	// assigns shows that it is running, well after it checked the Secret.
	runController(t, env)
	create(t, env, pool("p", "172.25.254.50-172.25.254.59"), lbService("default", "after-restart"))
	waitIngress(t, env, "default", "after-restart", "172.25.254.50")
	after := memberlistSecret(t, env)
	if after.ResourceVersion != before.ResourceVersion || !bytes.Equal(after.Data[controllers.MemberlistSecretKey], before.Data[controllers.MemberlistSecretKey]) {
		t.Errorf("the controller rewrote the existing memberlist secret (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
	}
}

// memberlistSecret returns the Secret, or a zero one when absent.
func memberlistSecret(t *testing.T, env *controlplane.Env) corev1.Secret {
	t.Helper()
	var s corev1.Secret
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.MemberlistSecret}, &s)
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(fmt.Errorf("read memberlist secret: %w", err))
	}
	return s
}

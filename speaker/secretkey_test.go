package speaker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ironlb/ironlb/controllers"
)

// The speaker gossips encrypted or, with --memberlist-allow-unencrypted
// only, not at all encrypted; without the Secret it waits a bounded time
// and then fails naming the Secret and the ways out.
func TestWaitSecretKey(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: MemberlistSecret},
		Data: map[string][]byte{MemberlistSecretKey: []byte("0123456789abcdefghijklmnopqrstuvwxyz")}}
	for _, tc := range []struct {
		name      string
		secret    bool
		allow     bool
		wantKey   bool
		wantErrIs error
	}{
		{name: "secret present", secret: true, wantKey: true},
		{name: "secret present, unencrypted allowed", secret: true, allow: true, wantKey: true},
		{name: "no secret, unencrypted allowed", allow: true},
		{name: "no secret", wantErrIs: ErrNoMemberlistKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(controllers.NewScheme())
			if tc.secret {
				b = b.WithObjects(secret.DeepCopy())
			}
			o := Options{Namespace: "metallb-system", MemberlistAllowUnencrypted: tc.allow, MemberlistSecretWait: 10 * time.Millisecond}
			key, err := waitSecretKey(context.Background(), b.Build(), o, logr.Discard())
			if !errors.Is(err, tc.wantErrIs) {
				t.Fatalf("waitSecretKey() error = %v, want %v", err, tc.wantErrIs)
			}
			if (key != nil) != tc.wantKey {
				t.Errorf("waitSecretKey() key present = %v, want %v", key != nil, tc.wantKey)
			}
			if err != nil {
				for _, want := range []string{"metallb-system/memberlist", "secretkey", "--memberlist-allow-unencrypted", "kubectl create secret generic"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
			}
		})
	}
}

// A Secret that appears while the speaker waits (the controller creating
// it at the same time as the speakers start) is found.
func TestWaitSecretKeyFindsLateSecret(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(controllers.NewScheme()).Build()
	done := make(chan error, 1)
	var key []byte
	go func() {
		var err error
		key, err = waitSecretKey(context.Background(), c, Options{Namespace: "metallb-system", MemberlistSecretWait: time.Minute}, logr.Discard())
		done <- err
	}()
	if err := c.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: MemberlistSecret},
		Data: map[string][]byte{MemberlistSecretKey: []byte("late-key")}}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || string(key) != "late-key" {
		t.Fatalf("waitSecretKey() = %q, %v; want the late Secret's key", key, err)
	}
}

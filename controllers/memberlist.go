package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Secret whose key encrypts the speakers' memberlist traffic, named as
// MetalLB names it, so that a Secret MetalLB's controller made keeps
// working, and the other way round.
const (
	MemberlistSecret    = "memberlist"
	MemberlistSecretKey = "secretkey"
)

// memberlistKeyBytes is the random part of a new key: 128 bytes, written
// base64 (as `openssl rand -base64 128`, what MetalLB's instructions
// used), so the value is text that survives environment variables and
// copy-paste, and its first 32 characters (what the speakers use; see
// speaker/membership.DeriveKey) carry 192 random bits.
const memberlistKeyBytes = 128

// memberlistRetry is the wait after a failed attempt to create the Secret.
const memberlistRetry = 5 * time.Second

// memberlistSecret creates the memberlist Secret with a random key when it
// is missing, once per leadership. It never replaces or rewrites one that
// exists (a user's own key, or MetalLB's), and never logs the key.
type memberlistSecret struct {
	client    client.Client
	namespace string
	log       logr.Logger
}

// NeedLeaderElection: one controller replica creates it.
func (m *memberlistSecret) NeedLeaderElection() bool { return true }

// Start ensures the Secret exists, retrying until it does or ctx ends.
func (m *memberlistSecret) Start(ctx context.Context) error {
	for {
		err := m.ensure(ctx)
		if err == nil {
			return nil
		}
		m.log.Error(err, "memberlist secret not ensured; speakers wait for it", "retry", memberlistRetry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(memberlistRetry):
		}
	}
}

// ensure reads the Secret (from the cache) and creates it when absent; an
// AlreadyExists from a Secret created meanwhile is success too.
func (m *memberlistSecret) ensure(ctx context.Context) error {
	key := client.ObjectKey{Namespace: m.namespace, Name: MemberlistSecret}
	err := m.client.Get(ctx, key, &corev1.Secret{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read secret %s: %w", key, err)
	}
	value, err := newMemberlistKey()
	if err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: m.namespace, Name: MemberlistSecret,
			Labels: map[string]string{"app.kubernetes.io/name": "ironlb", "app.kubernetes.io/component": "controller"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{MemberlistSecretKey: value},
	}
	switch err := m.client.Create(ctx, s); {
	case apierrors.IsAlreadyExists(err):
		return nil
	case err != nil:
		return fmt.Errorf("create secret %s: %w", key, err)
	}
	m.log.Info("created the memberlist secret with a random key", "secret", key.String())
	return nil
}

func newMemberlistKey() ([]byte, error) {
	raw := make([]byte, memberlistKeyBytes)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("random memberlist key: %w", err)
	}
	return base64.StdEncoding.AppendEncode(nil, raw), nil
}

package lab

import (
	"context"
	"os"
	"testing"
	"time"
)

// RequireRoot skips the test when not running as root, saying why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the network-namespace lab needs root (run as root, as CI does)")
	}
}

// NewForTest builds a lab for a test: it skips without root, prints every
// process's log if the test fails, and tears the lab down when the test ends.
func NewForTest(t testing.TB, cfg Config) *Lab {
	t.Helper()
	RequireRoot(t)
	// Another lab on the machine (another package's tests) holds the host
	// address for a while; wait for it rather than fail.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lab %s process logs:\n%s", l.Prefix, l.Logs())
		}
		if err := l.Close(); err != nil {
			t.Errorf("tear down lab: %v", err)
		}
	})
	return l
}

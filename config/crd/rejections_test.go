package crd_test

import (
	"strings"
	"testing"
)

// TestRejectedAtApply applies objects that are wrong in themselves and checks
// that kubectl refuses them with a message naming the field and, where the
// server can say it, the bad value.
func TestRejectedAtApply(t *testing.T) {
	k := startCluster(t)
	const ns = "crd-reject"
	k.namespace(t, ns)
	for _, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := manifest(tc.apiVersion, tc.kind, objectName(tc.name), ns, tc.spec)
			out, err := k.KubectlInput(m, "apply", "-f", "-")
			if err == nil {
				t.Fatalf("kubectl apply accepted:\n%s", m)
			}
			t.Log(strings.TrimSpace(out))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("kubectl output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

package speaker

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func withAddrs(addrs ...string) func(*corev1.Node) {
	return func(n *corev1.Node) {
		for _, a := range addrs {
			typ := corev1.NodeInternalIP
			if strings.HasPrefix(a, "ext:") {
				typ, a = corev1.NodeExternalIP, strings.TrimPrefix(a, "ext:")
			}
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: typ, Address: a})
		}
	}
}

func TestJoinCandidates(t *testing.T) {
	tests := []struct {
		name  string
		nodes []corev1.Node
		alive []string
		want  []string
	}{
		{
			name: "every other node's InternalIP of our family, sorted",
			nodes: []corev1.Node{
				node("n3", withAddrs("fd00:254::13", "172.25.254.13")),
				node("n1", withAddrs("172.25.254.11", "fd00:254::11")),
				node("n2", withAddrs("ext:198.51.100.2", "172.25.254.12")),
			},
			want: []string{"172.25.254.12:7946", "172.25.254.13:7946"},
		},
		{
			name: "members already alive are not joined again",
			nodes: []corev1.Node{
				node("n1", withAddrs("172.25.254.11")), node("n2", withAddrs("172.25.254.12")), node("n3", withAddrs("172.25.254.13")),
			},
			alive: []string{"n1", "n3"},
			want:  []string{"172.25.254.12:7946"},
		},
		{
			name: "an IPv6-only node joins IPv6 addresses",
			nodes: []corev1.Node{
				node("n1", withAddrs("fd00:254::11")), node("n2", withAddrs("172.25.254.12", "fd00:254::12")),
			},
			want: []string{"[fd00:254::12]:7946"},
		},
		{
			name:  "nodes without addresses are skipped",
			nodes: []corev1.Node{node("n1", withAddrs("172.25.254.11")), node("n2"), node("n3", withAddrs("bogus"))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := joinCandidates(tc.nodes, "n1", tc.alive, 7946)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("joinCandidates (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatusName(t *testing.T) {
	long := strings.Repeat("a", 63)
	longNode := strings.Repeat("node.", 50) + "x"
	seen := map[string]string{}
	for _, tc := range [][3]string{
		{"default", "web", "n1"},
		{"default", "web", "n2"},
		{"other", "web", "n1"},
		{"default", "web-n1", ""},
		{"default", "web", "n1."},
		{long, long, longNode},
		{long, long, longNode + "y"},
	} {
		got := StatusName(tc[0], tc[1], tc[2])
		if errs := validation.IsDNS1123Subdomain(got); len(errs) > 0 {
			t.Errorf("StatusName(%q) = %q, not a valid object name: %v", tc, got, errs)
		}
		if again := StatusName(tc[0], tc[1], tc[2]); again != got {
			t.Errorf("StatusName(%q) = %q then %q", tc, got, again)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("StatusName(%q) = StatusName(%s) = %q", tc, prev, got)
		}
		seen[got] = strings.Join(tc[:], "/")
	}
	if got := StatusName("default", "web", "n1"); !strings.HasPrefix(got, "l2-web-n1-") {
		t.Errorf(`StatusName("default", "web", "n1") = %q, want it to start with "l2-web-n1-"`, got)
	}
}

func TestNodeChangedIgnoresHeartbeats(t *testing.T) {
	base := node("n1", withAddrs("172.25.254.11"))
	tests := []struct {
		name   string
		change func(*corev1.Node)
		want   bool
	}{
		{"heartbeat only", func(n *corev1.Node) {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue})
			n.ResourceVersion = "2"
		}, false},
		{"label added", label(ExcludeLabel, ""), true},
		{"network unavailable", netUnavailable, true},
		{"address changed", func(n *corev1.Node) { n.Status.Addresses[0].Address = "172.25.254.21" }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			updated := *base.DeepCopy()
			tc.change(&updated)
			if got := (nodeChanged{}).Update(event.UpdateEvent{ObjectOld: &base, ObjectNew: &updated}); got != tc.want {
				t.Errorf("nodeChanged.Update after %s = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

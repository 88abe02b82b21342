package speaker

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/controllers"
)

// The speaker writes its own node's ConfigurationState.
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=configurationstates,verbs=list;watch;create;update
// +kubebuilder:rbac:groups=metallb.io,namespace=metallb-system,resources=configurationstates/status,verbs=patch

// ConfigurationStateName is the name of the ConfigurationState of node's
// speaker, as MetalLB names it.
func ConfigurationStateName(node string) string { return "speaker-" + node }

// configStateRetry is how long a failed write waits before the next try.
const configStateRetry = 5 * time.Second

// configState writes this node's ConfigurationState: Valid, or Invalid with
// the node-level problems (settings this node's speaker cannot honour) in
// errorSummary. Configuration problems of the cluster as a whole are the
// controller's ConfigurationState's business. It writes on its own
// goroutine, so a slow API server never holds up a reconcile, and only when
// the problems change.
type configState struct {
	client    client.Client
	namespace string
	node      string
	log       logr.Logger

	mu sync.Mutex
	// problems by source ("bgp"), each in its reporter's order.
	problems map[string][]string
	kick     chan struct{}
}

func newConfigState(c client.Client, namespace, node string, log logr.Logger) *configState {
	return &configState{client: c, namespace: namespace, node: node, log: log.WithName("configstate"),
		problems: map[string][]string{}, kick: make(chan struct{}, 1)}
}

// set replaces the problems of one source and schedules a write. The first
// call, from the first reconcile, writes even when there are none, so every
// speaker's state appears once it has looked at the configuration.
func (w *configState) set(source string, problems []string) {
	w.mu.Lock()
	w.problems[source] = slices.Clone(problems)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// want is every source's problems, sources in name order.
func (w *configState) want() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, src := range slices.Sorted(maps.Keys(w.problems)) {
		out = append(out, w.problems[src]...)
	}
	return out
}

// NeedLeaderElection: every speaker writes its own node's state.
func (w *configState) NeedLeaderElection() bool { return false }

// Start writes the state on every change until ctx ends, retrying failed
// writes.
func (w *configState) Start(ctx context.Context) error {
	var written []string
	wrote := false
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		case <-retry.C:
		}
		want := w.want()
		if wrote && slices.Equal(want, written) {
			continue
		}
		err := controllers.WriteConfigurationState(ctx, w.client, controllers.StateReport{
			Namespace: w.namespace,
			Name:      ConfigurationStateName(w.node),
			Labels:    map[string]string{v1beta1.ComponentTypeLabel: "speaker", v1beta1.NodeNameLabel: w.node},
			Problems:  want,
			Valid:     "the speaker honours every setting that applies to this node",
			Outcome:   "the speaker does without what it cannot honour, as each problem says",
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.log.Error(err, "write configuration state", "retry", configStateRetry)
			retry.Reset(configStateRetry)
			continue
		}
		written, wrote = want, true
	}
}

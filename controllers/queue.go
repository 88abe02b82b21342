package controllers

import (
	"context"
	"sync"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

// trigger lets one controller enqueue work for another without blocking:
// requests added before the target controller starts are kept and handed
// over when it does, and the workqueue folds duplicates.
type trigger struct {
	mu      sync.Mutex
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	pending []reconcile.Request
}

// Source is the controller-runtime source to watch in the target controller.
func (t *trigger) Source() source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.queue = q
		for _, r := range t.pending {
			q.Add(r)
		}
		t.pending = nil
		return nil
	})
}

// Add enqueues the requests.
func (t *trigger) Add(reqs ...reconcile.Request) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.queue == nil {
		t.pending = append(t.pending, reqs...)
		return
	}
	for _, r := range reqs {
		t.queue.Add(r)
	}
}

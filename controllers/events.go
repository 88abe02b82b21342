package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// newRecorder returns a recorder of core/v1 Events that lives as long as the
// manager. core/v1 rather than events.k8s.io: the latter folds events that
// differ only in their message into one series that keeps the first
// message, so `kubectl describe` would show a stale reason after the cause
// of a failure changed.
func newRecorder(mgr ctrl.Manager, component string) (record.EventRecorder, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	// Events are core types: protobuf costs the API server less to decode
	// than JSON, and the controller writes one per assignment.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("event recorder: %w", err)
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		b.Shutdown()
		return nil
	})); err != nil {
		return nil, err
	}
	return b.NewRecorder(mgr.GetScheme(), corev1.EventSource{Component: component}), nil
}

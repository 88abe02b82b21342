package speaker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/e2e/controlplane"
)

// speakerState is what `kubectl get configurationstate speaker-<node>`
// shows a user.
type speakerState struct {
	Labels       map[string]string
	Result       v1beta1.ConfigurationResult
	ErrorSummary string
	Valid        metav1.ConditionStatus
}

func readSpeakerState(ctx context.Context, c client.Client, node string) (speakerState, error) {
	var st v1beta1.ConfigurationState
	if err := c.Get(ctx, client.ObjectKey{Namespace: "metallb-system", Name: ConfigurationStateName(node)}, &st); err != nil {
		return speakerState{}, err
	}
	out := speakerState{Labels: st.Labels, Result: st.Status.Result, ErrorSummary: st.Status.ErrorSummary}
	for _, cond := range st.Status.Conditions {
		if cond.Type == "Valid" {
			out.Valid = cond.Status
		}
	}
	return out, nil
}

// TestSpeakerConfigurationState runs a speaker against a real API server:
// it writes its node's ConfigurationState, Invalid with the BGPPeer setting
// it cannot honour in errorSummary, Valid once the peer is fixed; and it
// tells, as a Warning Event on the BGPPeer, that a session stays down.
func TestSpeakerConfigurationState(t *testing.T) {
	env := controlplane.Start(t)
	c := env.Client
	ctx := context.Background()

	closedPort := setUpBGPNode(t, c)
	red := &v1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "red"},
		Spec: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "127.0.0.2", VRFName: "red"}}
	mustCreate(t, c,
		&v1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Namespace: "metallb-system", Name: "tor"},
			Spec: v1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "127.0.0.1", Port: closedPort,
				ConnectTime: &metav1.Duration{Duration: time.Second}}},
		red,
	)
	startSpeaker(t, env, "n1")

	labels := map[string]string{"metallb.io/component-type": "speaker", "metallb.io/node-name": "n1"}
	eventually(t, "ConfigurationState speaker-n1 Invalid", func() string {
		got, err := readSpeakerState(ctx, c, "n1")
		if err != nil {
			return err.Error()
		}
		want := speakerState{Labels: labels, Result: v1beta1.ConfigurationResultInvalid,
			ErrorSummary: `peer "red": spec.vrf "red": not supported by the embedded BGP server: the embedded BGP server runs sessions in the default VRF only; the peer is not configured on this node`,
			Valid:        metav1.ConditionFalse}
		return cmp.Diff(want, got)
	})

	if err := c.Delete(ctx, red); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ConfigurationState speaker-n1 Valid", func() string {
		got, err := readSpeakerState(ctx, c, "n1")
		if err != nil {
			return err.Error()
		}
		return cmp.Diff(speakerState{Labels: labels, Result: v1beta1.ConfigurationResultValid, Valid: metav1.ConditionTrue}, got)
	})

	eventually(t, "BGPSessionDown event on tor", func() string {
		notes, err := eventNotes(ctx, c, "metallb-system", corev1.EventTypeWarning, ReasonBGPSessionDown, "tor")
		switch {
		case err != nil:
			return err.Error()
		case len(notes) == 0:
			return "none yet"
		case !strings.Contains(notes[0], "connection refused"):
			return "event without the reason: " + notes[0]
		}
		return ""
	})
}

// TestConfigurationStateNameIsMetalLBs: tools that read MetalLB's speaker
// states find ironlb's under the same name.
func TestConfigurationStateNameIsMetalLBs(t *testing.T) {
	if got := ConfigurationStateName("worker-1"); got != "speaker-worker-1" {
		t.Errorf("ConfigurationStateName(worker-1) = %q, want speaker-worker-1", got)
	}
}

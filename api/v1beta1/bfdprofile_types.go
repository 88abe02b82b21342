/*
Copyright 2026 The ironlb Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Values a BFD session uses for the BFDProfileSpec fields left unset.
const (
	DefaultBFDReceiveInterval  uint32 = 300 // milliseconds
	DefaultBFDTransmitInterval uint32 = 300 // milliseconds
	DefaultBFDDetectMultiplier uint32 = 3
	DefaultBFDEchoInterval     uint32 = 50 // milliseconds
	DefaultBFDMinimumTTL       uint32 = 254
)

// BFDProfileSpec holds the timers and modes of a BFD session. Unset fields
// take the Default* values of this package; the API server does not fill
// them in, so objects read back exactly as written.
type BFDProfileSpec struct {
	// ReceiveInterval is the shortest interval, in milliseconds, at which
	// this end can receive control packets. Defaults to 300.
	// +optional
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	ReceiveInterval *uint32 `json:"receiveInterval,omitempty"`

	// TransmitInterval is the shortest interval, in milliseconds, at which
	// this end wants to send control packets (before jitter). Defaults to 300.
	// +optional
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	TransmitInterval *uint32 `json:"transmitInterval,omitempty"`

	// DetectMultiplier is how many remote transmit intervals may pass without
	// a packet before the session is declared down. Defaults to 3.
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	DetectMultiplier *uint32 `json:"detectMultiplier,omitempty"`

	// EchoInterval is the shortest interval, in milliseconds, at which this
	// end can handle echo packets. Defaults to 50.
	// +optional
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	EchoInterval *uint32 `json:"echoInterval,omitempty"`

	// EchoMode turns on echo packets. Off by default; not usable on multi-hop
	// sessions.
	// +optional
	EchoMode *bool `json:"echoMode,omitempty"`

	// PassiveMode makes this end wait for the peer's control packets instead
	// of starting the session itself.
	// +optional
	PassiveMode *bool `json:"passiveMode,omitempty"`

	// MinimumTTL is, for multi-hop sessions, the lowest TTL an incoming
	// control packet may have. Defaults to 254.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	MinimumTTL *uint32 `json:"minimumTtl,omitempty"`
}

// BFDProfileStatus is empty: the profile reports nothing yet.
type BFDProfileStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Passive Mode",type=boolean,JSONPath=`.spec.passiveMode`
// +kubebuilder:printcolumn:name="Transmit Interval",type=integer,JSONPath=`.spec.transmitInterval`
// +kubebuilder:printcolumn:name="Receive Interval",type=integer,JSONPath=`.spec.receiveInterval`
// +kubebuilder:printcolumn:name="Multiplier",type=integer,JSONPath=`.spec.detectMultiplier`

// BFDProfile is a named set of BFD settings that BGPPeers refer to.
type BFDProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BFDProfileSpec   `json:"spec,omitempty"`
	Status BFDProfileStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BFDProfileList is a list of BFDProfile.
type BFDProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BFDProfile `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BFDProfile{}, &BFDProfileList{})
}

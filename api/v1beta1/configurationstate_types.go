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

// ConfigurationResult is the outcome of resolving the configuration.
// +kubebuilder:validation:Enum=Valid;Invalid;Unknown
type ConfigurationResult string

// The possible ConfigurationResult values.
const (
	// ConfigurationResultValid: every object was accepted. Names of objects
	// that do not exist yet are warnings, in the controller's
	// DanglingReferences condition, and leave the result Valid.
	ConfigurationResultValid ConfigurationResult = "Valid"
	// ConfigurationResultInvalid: at least one object was left out; see
	// ErrorSummary and the Events on the objects.
	ConfigurationResultInvalid ConfigurationResult = "Invalid"
	// ConfigurationResultUnknown: the component has not reported yet.
	ConfigurationResultUnknown ConfigurationResult = "Unknown"
)

// Label keys on ConfigurationState objects.
const (
	// ComponentTypeLabel is "controller" or "speaker".
	ComponentTypeLabel = "metallb.io/component-type"
	// NodeNameLabel is the node of a speaker's ConfigurationState.
	NodeNameLabel = "metallb.io/node-name"
)

// ConfigurationStateStatus is what a component found when it last resolved
// the configuration.
type ConfigurationStateStatus struct {
	// Result of the last resolution.
	// +optional
	Result ConfigurationResult `json:"result,omitempty"`

	// ErrorSummary gathers the problems found; empty when Result is Valid.
	// +optional
	ErrorSummary string `json:"errorSummary,omitempty"`

	// Conditions reported by the component's reconcilers.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchMergeKey=type
	// +patchStrategy=merge
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Result",type=string,JSONPath=`.status.result`
// +kubebuilder:printcolumn:name="ErrorSummary",type=string,JSONPath=`.status.errorSummary`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ConfigurationState reports whether a component (the controller, or the
// speaker of one node) accepted the configuration. It has no spec.
type ConfigurationState struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status ConfigurationStateStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ConfigurationStateList is a list of ConfigurationState.
type ConfigurationStateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConfigurationState `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ConfigurationState{}, &ConfigurationStateList{})
}

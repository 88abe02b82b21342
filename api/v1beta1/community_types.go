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

// CommunityAlias gives a BGP community value a name that BGPAdvertisements
// can use instead of the value.
type CommunityAlias struct {
	// Name of the alias. Names contain no colon, so they never look like a
	// community value.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule=`!self.contains(':') && !self.matches('\\s')`,messageExpression=`'alias name "' + self + '" must not contain colons or spaces'`
	Name string `json:"name,omitempty"`

	// Value is a standard community (65000:100, 16-bit numbers) or a large
	// community (large:65000:1:2, 32-bit numbers).
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule=`(self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535)) || (self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.substring(6).split(':').all(p, int(p) <= 4294967295))`,messageExpression=`'"' + self + '" is not a community: use a standard community (65000:100, 16-bit numbers) or a large community (large:65000:1:2, 32-bit numbers)'`
	Value string `json:"value,omitempty"`
}

// CommunitySpec lists community aliases.
type CommunitySpec struct {
	// Communities are the aliases; each name appears once.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	Communities []CommunityAlias `json:"communities,omitempty"`
}

// CommunityStatus is empty: the object reports nothing yet.
type CommunityStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status

// Community is a set of named BGP community values.
type Community struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CommunitySpec   `json:"spec,omitempty"`
	Status CommunityStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CommunityList is a list of Community.
type CommunityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Community `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Community{}, &CommunityList{})
}

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

// Defaults of BGPAdvertisementSpec, also applied by the API server.
const (
	DefaultAggregationLength   int32 = 32
	DefaultAggregationLengthV6 int32 = 128
)

// BGPAdvertisementSpec says how the addresses of the selected pools are
// announced to BGP peers.
type BGPAdvertisementSpec struct {
	// AggregationLength is the prefix length announced for IPv4 addresses:
	// 32 announces each address alone, shorter lengths announce the
	// enclosing prefix.
	// +optional
	// +kubebuilder:default:=32
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 is the prefix length announced for IPv6 addresses.
	// +optional
	// +kubebuilder:default:=128
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`

	// LocalPref is the BGP LOCAL_PREF attribute of the announced paths; a
	// higher value is preferred. Only meaningful towards iBGP peers.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPref uint32 `json:"localPref,omitempty"`

	// Communities attached to the announced paths. Each entry is a standard
	// community (65000:100, two 16-bit numbers), a large community
	// (large:65000:1:2, three 32-bit numbers) or the name of an alias defined
	// in a Community object.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule=`(!self.contains(':') && !self.matches('\\s')) || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535)) || (self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.substring(6).split(':').all(p, int(p) <= 4294967295))`,messageExpression=`'"' + self + '" is not a community: use a standard community (65000:100, 16-bit numbers), a large community (large:65000:1:2, 32-bit numbers) or an alias name without colons'`
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,messageExpression=`'"' + self.filter(x, !self.exists_one(y, y == x))[0] + '" is listed more than once'`
	Communities []string `json:"communities,omitempty"`

	// IPAddressPools names the pools to announce. When neither this nor
	// IPAddressPoolSelectors selects a pool, every pool is announced.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,messageExpression=`'"' + self.filter(x, !self.exists_one(y, y == x))[0] + '" is listed more than once'`
	IPAddressPools []string `json:"ipAddressPools,omitempty"`

	// IPAddressPoolSelectors select, by label, pools to announce.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,message=`lists the same selector twice: remove one of them`
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`

	// NodeSelectors limit the nodes announced as next hops. When empty, every
	// node is.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,message=`lists the same selector twice: remove one of them`
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// Peers names the BGPPeers the addresses are announced to. When empty,
	// they are announced to every peer.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,messageExpression=`'"' + self.filter(x, !self.exists_one(y, y == x))[0] + '" is listed more than once'`
	Peers []string `json:"peers,omitempty"`

	// ServiceSelectors limit the advertisement to Services with matching
	// labels. When empty, every Service with an address from a selected pool
	// is announced. This field is an ironlb addition.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,message=`lists the same selector twice: remove one of them`
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// BGPAdvertisementStatus is empty: the advertisement reports nothing yet.
type BGPAdvertisementStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="IPAddressPools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="IPAddressPool Selectors",type=string,JSONPath=`.spec.ipAddressPoolSelectors`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Node Selectors",type=string,JSONPath=`.spec.nodeSelectors`,priority=1

// BGPAdvertisement announces the addresses of the selected pools to BGP
// peers, with the given path attributes.
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPAdvertisementSpec   `json:"spec,omitempty"`
	Status BGPAdvertisementStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BGPAdvertisementList is a list of BGPAdvertisement.
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPAdvertisement{}, &BGPAdvertisementList{})
}

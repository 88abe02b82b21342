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

// BGPPeerSpec is the older form of metallb.io/v1beta2 BGPPeerSpec. Its schema
// is a subset of the v1beta2 one, field for field, so the API server stores
// a v1beta1 object as v1beta2 without a conversion webhook.
//
// +kubebuilder:validation:XValidation:rule=`!has(self.keepaliveTime) || !has(self.holdTime) || !self.keepaliveTime.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$') || (has(self.holdTime) && !self.holdTime.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')) || duration(self.keepaliveTime) <= duration(self.holdTime)`,messageExpression=`'keepaliveTime ' + self.keepaliveTime + ' is greater than holdTime ' + self.holdTime`,fieldPath=`.keepaliveTime`
type BGPPeerSpec struct {
	// MyASN is the AS number of the local end of the session.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN uint32 `json:"myASN"`

	// ASN is the AS number expected from the peer.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASN uint32 `json:"peerASN"`

	// Address of the peer.
	// +required
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`isIP(self)`,messageExpression=`'"' + self + '" is not an IP address'`
	Address string `json:"peerAddress"`

	// SrcAddress is the local address the session is opened from.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || isIP(self)`,messageExpression=`'"' + self + '" is not an IP address'`
	SrcAddress string `json:"sourceAddress,omitempty"`

	// Port of the peer; 0 or unset means 179.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	Port uint16 `json:"peerPort,omitempty"`

	// HoldTime requested for the session (RFC 4271): 0 turns keepalives
	// off, otherwise at least 3s. Defaults to 90s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$') && (duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s')))`,messageExpression=`'holdTime "' + self + '" must be 0 or a duration from 3s to 65535s'`
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// KeepaliveTime requested for the session (RFC 4271); at most HoldTime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')`,messageExpression=`'keepaliveTime "' + self + '" is not a duration (like 30s)'`
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// RouterID advertised to the peer, an IPv4 address.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || (isIP(self) && ip(self).family() == 4)`,messageExpression=`'routerID "' + self + '" is not an IPv4 address'`
	RouterID string `json:"routerID,omitempty"`

	// NodeSelectors limit the nodes that open the session.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,message=`lists the same selector twice: remove one of them`
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// Password for TCP MD5 authentication of the session.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	Password string `json:"password,omitempty"`

	// BFDProfile names the BFDProfile of a BFD session run alongside this
	// BGP session.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	BFDProfile string `json:"bfdProfile,omitempty"`

	// EBGPMultiHop marks a peer that is more than one hop away.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`
}

// BGPPeerStatus is empty: the peer reports nothing yet.
type BGPPeerStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:deprecatedversion:warning="metallb.io/v1beta1 BGPPeer is deprecated; use metallb.io/v1beta2"
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="ASN",type=string,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="BFD Profile",type=string,JSONPath=`.spec.bfdProfile`
// +kubebuilder:printcolumn:name="Multi Hops",type=string,JSONPath=`.spec.ebgpMultiHop`

// BGPPeer is the deprecated v1beta1 form of a BGP peer, still served so
// older manifests apply. It is stored as v1beta2.
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPPeerSpec   `json:"spec,omitempty"`
	Status BGPPeerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// BGPPeerList is a list of BGPPeer.
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BGPPeer{}, &BGPPeerList{})
}

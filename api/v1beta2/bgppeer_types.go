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

package v1beta2

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DynamicASNMode lets a peer's AS number be learnt from the session instead
// of configured.
type DynamicASNMode string

// The possible DynamicASNMode values.
const (
	// InternalASNMode accepts the peer only if its AS number equals MyASN.
	InternalASNMode DynamicASNMode = "internal"
	// ExternalASNMode accepts the peer only if its AS number differs from MyASN.
	ExternalASNMode DynamicASNMode = "external"
)

// Session timers used when BGPPeerSpec leaves them unset.
const (
	DefaultHoldTimeSeconds = 90
	DefaultPort            = 179
)

// BGPPeerSpec describes one BGP session and the nodes that open it.
//
// +kubebuilder:validation:XValidation:rule=`has(self.peerASN) || has(self.dynamicASN)`,message="one of peerASN or dynamicASN must be set",fieldPath=`.peerASN`
// +kubebuilder:validation:XValidation:rule=`!(has(self.peerASN) && has(self.dynamicASN))`,messageExpression=`'peerASN and dynamicASN (' + self.dynamicASN + ') are mutually exclusive: set only one'`,fieldPath=`.dynamicASN`
// +kubebuilder:validation:XValidation:rule=`(has(self.peerAddress) && size(self.peerAddress) > 0) || (has(self.interface) && size(self.interface) > 0)`,message="one of peerAddress or interface must be set",fieldPath=`.peerAddress`
// +kubebuilder:validation:XValidation:rule=`!(has(self.peerAddress) && size(self.peerAddress) > 0 && has(self.interface) && size(self.interface) > 0)`,messageExpression=`'peerAddress (' + self.peerAddress + ') and interface (' + self.interface + ') are mutually exclusive: set only one'`,fieldPath=`.interface`
// +kubebuilder:validation:XValidation:rule=`!(has(self.password) && size(self.password) > 0 && has(self.passwordSecret) && has(self.passwordSecret.name) && size(self.passwordSecret.name) > 0)`,message="password and passwordSecret are mutually exclusive: set only one",fieldPath=`.passwordSecret`
// +kubebuilder:validation:XValidation:rule=`!has(self.keepaliveTime) || !has(self.holdTime) || !self.keepaliveTime.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$') || (has(self.holdTime) && !self.holdTime.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')) || duration(self.keepaliveTime) <= duration(self.holdTime)`,messageExpression=`'keepaliveTime ' + self.keepaliveTime + ' is greater than holdTime ' + self.holdTime`,fieldPath=`.keepaliveTime`
type BGPPeerSpec struct {
	// MyASN is the AS number of the local end of the session.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN uint32 `json:"myASN"`

	// ASN is the AS number expected from the peer. Exactly one of ASN and
	// DynamicASN is set.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASN uint32 `json:"peerASN,omitempty"`

	// DynamicASN accepts the peer's AS number from the session: "internal"
	// requires it to equal MyASN, "external" requires it to differ.
	// +optional
	// +kubebuilder:validation:Enum=internal;external
	// +kubebuilder:validation:MaxLength=8
	DynamicASN DynamicASNMode `json:"dynamicASN,omitempty"`

	// Address of the peer. Exactly one of Address and Interface is set.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || isIP(self)`,messageExpression=`'"' + self + '" is not an IP address'`
	Address string `json:"peerAddress,omitempty"`

	// Interface of the node to peer over with BGP unnumbered (the peer's
	// link-local address is discovered). Only the session can tell whether
	// the interface exists.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^/\s:]*$`
	Interface string `json:"interface,omitempty"`

	// SrcAddress is the local address the session is opened from.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || isIP(self)`,messageExpression=`'"' + self + '" is not an IP address'`
	SrcAddress string `json:"sourceAddress,omitempty"`

	// Port of the peer.
	// +optional
	// +kubebuilder:default:=179
	// +kubebuilder:validation:Minimum=1
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
	// Defaults to a third of HoldTime.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')`,messageExpression=`'keepaliveTime "' + self + '" is not a duration (like 30s)'`
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// ConnectTime is how long to wait between connection attempts, a whole
	// number of seconds from 1s to 65535s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('65535s') && duration(self).getMilliseconds() % 1000 == 0`,messageExpression=`'connectTime "' + self + '" must be a whole number of seconds from 1s to 65535s'`
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`

	// RouterID advertised to the peer, an IPv4 address. Defaults to the
	// node's address.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || (isIP(self) && ip(self).family() == 4)`,messageExpression=`'routerID "' + self + '" is not an IPv4 address'`
	RouterID string `json:"routerID,omitempty"`

	// NodeSelectors limit the nodes that open the session. When empty, every
	// node does.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule=`self.all(x, self.exists_one(y, y == x))`,message=`lists the same selector twice: remove one of them`
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`

	// Password for TCP MD5 authentication of the session. Mutually exclusive
	// with PasswordSecret.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	Password string `json:"password,omitempty"`

	// PasswordSecret names a Secret of type kubernetes.io/basic-auth, in
	// ironlb's namespace, whose "password" key holds the TCP MD5 password.
	// +optional
	PasswordSecret corev1.SecretReference `json:"passwordSecret,omitempty"`

	// BFDProfile names the BFDProfile of a BFD session run alongside this
	// BGP session. When empty there is no BFD session.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	BFDProfile string `json:"bfdProfile,omitempty"`

	// EnableGracefulRestart keeps forwarding on known routes while the
	// session restarts. Fixed at creation, since changing it means resetting
	// the session.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="enableGracefulRestart cannot be changed after creation"
	EnableGracefulRestart bool `json:"enableGracefulRestart,omitempty"`

	// EBGPMultiHop marks a peer that is more than one hop away.
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`

	// VRFName is the host VRF whose interfaces the session runs over.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	VRFName string `json:"vrf,omitempty"`

	// DisableMP keeps IPv4 and IPv6 routes on separate sessions.
	// Deprecated: use DualStackAddressFamily.
	// +optional
	// +kubebuilder:default:=false
	DisableMP bool `json:"disableMP,omitempty"`

	// DualStackAddressFamily carries both address families over this session,
	// whichever family the session itself uses.
	// +optional
	// +kubebuilder:default:=false
	DualStackAddressFamily bool `json:"dualStackAddressFamily,omitempty"`
}

// BGPPeerStatus is empty: the peer reports nothing yet.
type BGPPeerStatus struct{}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="ASN",type=string,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="BFD Profile",type=string,JSONPath=`.spec.bfdProfile`
// +kubebuilder:printcolumn:name="Multi Hops",type=string,JSONPath=`.spec.ebgpMultiHop`

// BGPPeer is a BGP router that nodes open sessions to.
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

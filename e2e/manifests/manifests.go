// Package manifests writes the ironlb configuration the lab tests and the
// demo apply, as a user would write it: YAML for kubectl apply.
package manifests

import (
	"fmt"
	"strings"
)

// The lab router's AS and the nodes': different, so eBGP, as towards a
// top-of-rack router. A router in NodeASN makes the sessions iBGP.
const (
	RouterASN = 64513
	NodeASN   = 64512
)

// RouterIPv4 is the lab router's address on the nodes' segment.
const RouterIPv4 = "172.25.254.1"

// Pool is the IPAddressPool first-pool of 01-l2-first-pool.yaml, with
// these address ranges.
func Pool(ranges ...string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: first-pool
  namespace: metallb-system
spec:
  addresses:
`)
	for _, r := range ranges {
		fmt.Fprintf(&b, "  - %s\n", r)
	}
	return b.String()
}

// FirstPoolRange is the address range of 01-l2-first-pool.yaml's pool.
const FirstPoolRange = "172.25.254.50-172.25.254.99"

// BGPAdvertisement advertises first-pool by BGP; spec holds further lines
// of its spec, each indented by two spaces and ending in a newline.
func BGPAdvertisement(spec string) string {
	return `apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
` + spec
}

// Peer is a BGPPeer in metallb-system.
type Peer struct {
	Name           string
	MyASN, PeerASN uint32
	Address        string
	// Spec holds further lines of the spec, each indented by two spaces
	// and ending in a newline.
	Spec string
}

// BGPPeer is p's manifest. Every connect retry comes after a second, so
// that a session comes up soon after its router.
func BGPPeer(p Peer) string {
	return fmt.Sprintf(`apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: %s
  namespace: metallb-system
spec:
  myASN: %d
  peerASN: %d
  peerAddress: %s
  connectTime: 1s
%s`, p.Name, p.MyASN, p.PeerASN, p.Address, p.Spec)
}

// Join makes one manifest of several objects.
func Join(objects ...string) string {
	return strings.Join(objects, "---\n")
}

// BGPFirstPool is what a user applies for BGP mode: the first pool of
// 01-l2-first-pool.yaml advertised by BGP to the lab router (peer tor),
// with no L2Advertisement.
func BGPFirstPool() string {
	return Join(Pool(FirstPoolRange), BGPAdvertisement(""),
		BGPPeer(Peer{Name: "tor", MyASN: NodeASN, PeerASN: RouterASN, Address: RouterIPv4}))
}

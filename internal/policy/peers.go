package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1beta2"
)

const (
	defaultHoldTime = v1beta2.DefaultHoldTimeSeconds * time.Second
	maxHoldTime     = 65535 * time.Second
	// passwordKey is the key of a kubernetes.io/basic-auth Secret that holds
	// a peer's password.
	passwordKey = "password"
)

// peerTable is the peers accepted so far, plus the names of those left out.
type peerTable struct {
	byName  map[string]*Peer
	order   []*Peer
	refs    map[*Peer]ref
	leftOut map[string]ref
	// bfd is the accepted BFD profiles, for rules that depend on a peer's.
	bfd map[string]BFDProfile
}

// echo reports whether p uses a BFD profile in echo mode.
func (t peerTable) echo(p *Peer) bool {
	return p.BFDProfile != "" && t.bfd[p.BFDProfile].EchoMode
}

func (t peerTable) list() []Peer {
	out := make([]Peer, 0, len(t.order))
	for _, p := range t.order {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return compareStrings(a.Name, b.Name) })
	return out
}

// sessionKey identifies the BGP session a peer asks for: two peers with the
// same key on one node would be one session configured twice.
type sessionKey struct {
	addr  netip.Addr
	iface string
	port  uint16
	vrf   string
}

func (k sessionKey) String() string {
	var b strings.Builder
	if k.iface != "" {
		fmt.Fprintf(&b, "interface %s", k.iface)
	} else {
		fmt.Fprintf(&b, "%s", netip.AddrPortFrom(k.addr, k.port))
	}
	if k.vrf != "" {
		fmt.Fprintf(&b, " in VRF %s", k.vrf)
	}
	return b.String()
}

func resolvePeers(in []v1beta2.BGPPeer, secrets map[string]corev1.Secret, bfd map[string]BFDProfile, bfdLeftOut map[string]ref, ps *problems) peerTable {
	t := peerTable{byName: map[string]*Peer{}, refs: map[*Peer]ref{}, leftOut: map[string]ref{}, bfd: bfd}
	bySession := map[sessionKey][]*Peer{}
	for _, p := range byAge(in) {
		obj := refOf(KindBGPPeer, p)
		s := &p.Spec
		peer, ok := peerFromCR(p, obj, secrets, bfd, bfdLeftOut, ps)
		if ok {
			if prev, dup := t.byName[p.Name]; dup {
				other := t.refs[prev]
				ps.add(obj, true, "metadata.name", p.Name, other, ErrDuplicate, "is already the name of "+other.String())
				ok = false
			}
		}
		key := sessionKey{addr: peer.Address, iface: peer.Interface, port: peer.Port, vrf: peer.VRF}
		if ok {
			for _, prev := range bySession[key] {
				if selectorListsOverlap(prev.NodeSelectors, peer.NodeSelectors) {
					other := t.refs[prev]
					field, value := "spec.peerAddress", s.Address
					if s.Interface != "" {
						field, value = "spec.interface", s.Interface
					}
					ps.add(obj, true, field, value, other, ErrDuplicate,
						"is the same session ("+key.String()+") as "+other.String()+" on nodes both select")
					ok = false
					break
				}
			}
		}
		if !ok {
			if _, taken := t.byName[p.Name]; !taken {
				t.leftOut[p.Name] = obj
			}
			continue
		}
		t.byName[p.Name] = &peer
		t.refs[&peer] = obj
		t.order = append(t.order, &peer)
		bySession[key] = append(bySession[key], &peer)
		delete(t.leftOut, p.Name)
	}
	return t
}

// peerFromCR makes the in-object checks of one peer and resolves its
// password and BFD profile.
func peerFromCR(p *v1beta2.BGPPeer, obj ref, secrets map[string]corev1.Secret, bfd map[string]BFDProfile, bfdLeftOut map[string]ref, ps *problems) (Peer, bool) {
	s := &p.Spec
	peer := Peer{
		Name:                   p.Name,
		Namespace:              p.Namespace,
		MyASN:                  s.MyASN,
		ASN:                    s.ASN,
		DynamicASN:             string(s.DynamicASN),
		Interface:              s.Interface,
		Port:                   s.Port,
		BFDProfile:             s.BFDProfile,
		EBGPMultiHop:           s.EBGPMultiHop,
		VRF:                    s.VRFName,
		EnableGracefulRestart:  s.EnableGracefulRestart,
		DualStackAddressFamily: s.DualStackAddressFamily,
	}
	fail := func(field, value string, err error) (Peer, bool) {
		ps.invalid(obj, field, value, err)
		return peer, false
	}
	if p.Name == "" {
		return fail("metadata.name", "", fmt.Errorf("empty name"))
	}
	if s.MyASN == 0 {
		return fail("spec.myASN", "0", fmt.Errorf("must be set (1-4294967295)"))
	}
	switch {
	case s.ASN == 0 && s.DynamicASN == "":
		return fail("spec.peerASN", "0", fmt.Errorf("one of peerASN or dynamicASN must be set"))
	case s.ASN != 0 && s.DynamicASN != "":
		return fail("spec.dynamicASN", string(s.DynamicASN), fmt.Errorf("cannot be combined with peerASN %d", s.ASN))
	case s.DynamicASN != "" && s.DynamicASN != v1beta2.InternalASNMode && s.DynamicASN != v1beta2.ExternalASNMode:
		return fail("spec.dynamicASN", string(s.DynamicASN), fmt.Errorf("must be %q or %q", v1beta2.InternalASNMode, v1beta2.ExternalASNMode))
	}
	internal := s.ASN == s.MyASN || s.DynamicASN == v1beta2.InternalASNMode
	if internal && s.EBGPMultiHop {
		return fail("spec.ebgpMultiHop", "true", fmt.Errorf("cannot be set for an iBGP peer (peer ASN equals myASN)"))
	}
	switch {
	case s.Address == "" && s.Interface == "":
		return fail("spec.peerAddress", "", fmt.Errorf("one of peerAddress or interface must be set"))
	case s.Address != "" && s.Interface != "":
		return fail("spec.interface", s.Interface, fmt.Errorf("cannot be combined with peerAddress %q", s.Address))
	case s.Interface != "":
		if err := checkInterfaceName(s.Interface); err != nil {
			return fail("spec.interface", s.Interface, err)
		}
	default:
		a, err := parsePlainAddr(s.Address)
		if err != nil {
			return fail("spec.peerAddress", s.Address, err)
		}
		peer.Address = a
	}
	if s.SrcAddress != "" {
		a, err := parsePlainAddr(s.SrcAddress)
		if err != nil {
			return fail("spec.sourceAddress", s.SrcAddress, err)
		}
		peer.SourceAddress = a
	}
	if s.RouterID != "" {
		a, err := parsePlainAddr(s.RouterID)
		if err == nil && !a.Is4() {
			err = fmt.Errorf("is not an IPv4 address")
		}
		if err != nil {
			return fail("spec.routerID", s.RouterID, err)
		}
		peer.RouterID = a
	}
	if peer.Port == 0 {
		peer.Port = v1beta2.DefaultPort
	}
	hold, keepalive, field, err := peerTimers(s.HoldTime, s.KeepaliveTime)
	if err != nil {
		return fail(field, "", err)
	}
	peer.HoldTime, peer.KeepaliveTime = hold, keepalive
	if s.ConnectTime != nil {
		if d := s.ConnectTime.Duration; d < time.Second || d > maxHoldTime {
			return fail("spec.connectTime", d.String(), fmt.Errorf("is outside 1s-65535s"))
		}
		peer.ConnectTime = s.ConnectTime.Duration
	}
	if strings.ContainsAny(s.VRFName, "/: \t\r\n") || len(s.VRFName) > 15 {
		return fail("spec.vrf", s.VRFName, fmt.Errorf("is not a valid VRF name"))
	}
	var bad string
	if peer.NodeSelectors, bad, err = parseSelectors("spec.nodeSelectors", s.NodeSelectors); err != nil {
		return fail(bad, "", err)
	}
	if s.BFDProfile != "" {
		if _, ok := bfd[s.BFDProfile]; !ok {
			other, leftOut := bfdLeftOut[s.BFDProfile]
			detail := "which is left out of the configuration (see its own problem)"
			if !leftOut {
				other = ref{kind: KindBFDProfile, namespace: p.Namespace, name: s.BFDProfile}
				detail = "which does not exist"
			}
			ps.add(obj, true, "spec.bfdProfile", s.BFDProfile, other, ErrMissingReference, "names "+other.String()+", "+detail)
			return peer, false
		}
	}
	// Password values never appear in problems: only field names do.
	if s.Password != "" && s.PasswordSecret.Name != "" {
		return fail("spec.passwordSecret", s.PasswordSecret.Name, fmt.Errorf("cannot be combined with spec.password"))
	}
	if strings.ContainsAny(s.Password, "\r\n") {
		return fail("spec.password", "", fmt.Errorf("contains a line break"))
	}
	peer.Password = s.Password
	if s.PasswordSecret.Name != "" {
		pw, other, err := passwordFromSecret(p, secrets)
		if err != nil {
			ps.add(obj, true, "spec.passwordSecret", other.namespace+"/"+other.name, other, ErrSecret, err.Error())
			return peer, false
		}
		peer.Password = pw
	}
	return peer, true
}

// parsePlainAddr parses an IP address without zone; IPv4-mapped IPv6 is
// taken as the IPv4 address it carries.
func parsePlainAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("is not an IP address")
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("has a zone; use spec.interface for link-local peers")
	}
	return a.Unmap(), nil
}

// peerTimers applies MetalLB's rules: with neither timer set, 90 s hold and
// a third of it as keepalive; with one set, the other is derived (hold =
// 3 x keepalive, keepalive = hold / 3). Hold time is 0 (no keepalives) or
// from 3 s to 65535 s, counted in whole seconds, and keepalive never
// exceeds it.
func peerTimers(hold, keepalive *metav1.Duration) (time.Duration, time.Duration, string, error) {
	var h, k time.Duration
	switch {
	case hold == nil && keepalive == nil:
		h = defaultHoldTime
		k = h / 3
	case keepalive == nil:
		h = hold.Duration
		k = h / 3
	case hold == nil:
		k = keepalive.Duration
		h = 3 * k
	default:
		h, k = hold.Duration, keepalive.Duration
	}
	if k < 0 {
		return 0, 0, "spec.keepaliveTime", fmt.Errorf("%s is negative", k)
	}
	if whole := h.Truncate(time.Second); h < 0 || (whole != 0 && whole < 3*time.Second) || h > maxHoldTime {
		return 0, 0, "spec.holdTime", fmt.Errorf("%s must be 0 or from 3s to 65535s", h)
	}
	if k > h {
		return 0, 0, "spec.keepaliveTime", fmt.Errorf("%s is greater than the hold time %s", k, h)
	}
	return h, k, "", nil
}

// passwordFromSecret reads the password of a peer from the basic-auth
// Secret it names. Errors name the Secret, never its content.
func passwordFromSecret(p *v1beta2.BGPPeer, secrets map[string]corev1.Secret) (string, ref, error) {
	ns := p.Spec.PasswordSecret.Namespace
	if ns == "" {
		ns = p.Namespace
	}
	other := ref{kind: KindSecret, namespace: ns, name: p.Spec.PasswordSecret.Name}
	sec, ok := secrets[ns+"/"+p.Spec.PasswordSecret.Name]
	if !ok {
		return "", other, fmt.Errorf("names %s, which does not exist", other)
	}
	if sec.Type != corev1.SecretTypeBasicAuth {
		return "", other, fmt.Errorf("names %s of type %q, want %q", other, sec.Type, corev1.SecretTypeBasicAuth)
	}
	pw, ok := sec.Data[passwordKey]
	if !ok && sec.StringData != nil {
		// StringData is write-only in the API, but objects built in memory
		// (tests, dry runs) may carry it.
		if s, found := sec.StringData[passwordKey]; found {
			pw, ok = []byte(s), true
		}
	}
	if !ok || len(pw) == 0 {
		return "", other, fmt.Errorf("names %s, which has no non-empty %q key", other, passwordKey)
	}
	if strings.ContainsAny(string(pw), "\r\n") {
		return "", other, fmt.Errorf("names %s, whose %q contains a line break", other, passwordKey)
	}
	return string(pw), other, nil
}

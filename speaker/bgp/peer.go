package bgp

import (
	"fmt"
	"net/netip"
	"time"
)

// maxHoldTime is the largest hold time the protocol's 16-bit field carries.
const maxHoldTime = 65535 * time.Second

// validatePeer rejects what the embedded server cannot honour or what is
// wrong in itself, naming the peer and the field so users can find it.
func validatePeer(p PeerConfig, routerID netip.Addr) error {
	bad := func(field string, sentinel error, format string, args ...any) error {
		return fmt.Errorf("peer %q: %s: %w: %s", p.Name, field, sentinel, fmt.Sprintf(format, args...))
	}
	if p.Name == "" {
		return fmt.Errorf("peer at %v: name: %w: empty", p.Address, ErrInvalid)
	}
	switch {
	case !p.Address.IsValid() || p.Address.IsUnspecified():
		return bad("address", ErrInvalid, "%v is not a peer address", p.Address)
	case p.Address.Zone() != "":
		return bad("address", ErrUnsupported, "zoned (interface) address %v", p.Address)
	case p.Address.Is4In6():
		return bad("address", ErrInvalid, "IPv4-mapped address %v", p.Address)
	}
	if p.MyASN == 0 {
		return bad("myASN", ErrInvalid, "must be set")
	}
	switch p.DynamicASN {
	case "":
		if p.PeerASN == 0 {
			return bad("peerASN", ErrInvalid, "must be set when dynamicASN is not")
		}
	case DynamicASNInternal, DynamicASNExternal:
		if p.PeerASN != 0 {
			return bad("dynamicASN", ErrInvalid, "excludes peerASN")
		}
	default:
		return bad("dynamicASN", ErrInvalid, "%q is neither %q nor %q", p.DynamicASN, DynamicASNInternal, DynamicASNExternal)
	}
	if p.SourceAddress.IsValid() && p.SourceAddress.Is4() != p.Address.Is4() {
		return bad("sourceAddress", ErrInvalid, "%v is not of the peer address's family", p.SourceAddress)
	}
	if p.RouterID.IsValid() && p.RouterID != routerID {
		return bad("routerID", ErrUnsupported, "one router id (%v) serves every session, cannot use %v", routerID, p.RouterID)
	}
	for _, t := range []struct {
		field string
		d     time.Duration
	}{{"holdTime", p.HoldTime}, {"keepaliveTime", p.KeepaliveTime}, {"connectTime", p.ConnectTime}} {
		if t.d < 0 || t.d%time.Second != 0 {
			return bad(t.field, ErrUnsupported, "%v is not a whole number of seconds", t.d)
		}
	}
	if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > maxHoldTime) {
		return bad("holdTime", ErrInvalid, "%v must be 0 or between 3s and %v", p.HoldTime, maxHoldTime)
	}
	if p.KeepaliveTime != 0 && p.KeepaliveTime > effectiveHold(p) {
		return bad("keepaliveTime", ErrInvalid, "%v exceeds the hold time %v", p.KeepaliveTime, effectiveHold(p))
	}
	if p.NextHopIPv4.IsValid() && !p.NextHopIPv4.Is4() {
		return bad("nextHopIPv4", ErrInvalid, "%v is not IPv4", p.NextHopIPv4)
	}
	if p.NextHopIPv6.IsValid() && (!p.NextHopIPv6.Is6() || p.NextHopIPv6.Is4In6()) {
		return bad("nextHopIPv6", ErrInvalid, "%v is not IPv6", p.NextHopIPv6)
	}
	if p.BFD.Enabled && p.EBGPMultiHop {
		return bad("bfd", ErrUnsupported, "the embedded server runs single-hop BFD only (RFC 5881), not over a multihop session")
	}
	if err := validateBFD(p.BFD); err != nil {
		return bad("bfd", ErrInvalid, "%v", err)
	}
	if p.DualStack {
		if p.Address.Is4() && !p.NextHopIPv6.IsValid() {
			return bad("dualStack", ErrInvalid, "IPv6 paths over an IPv4 session need nextHopIPv6")
		}
		if p.Address.Is6() && !p.NextHopIPv4.IsValid() {
			return bad("dualStack", ErrInvalid, "IPv4 paths over an IPv6 session need nextHopIPv4")
		}
	}
	return nil
}

// BFD timer bounds, as the BFDProfile API allows them.
const (
	minBFDInterval = 10 * time.Millisecond
	maxBFDInterval = 60 * time.Second
)

func validateBFD(b BFDConfig) error {
	if !b.Enabled {
		return nil
	}
	for _, iv := range []time.Duration{b.ReceiveInterval, b.TransmitInterval} {
		if iv < minBFDInterval || iv > maxBFDInterval || iv%time.Microsecond != 0 {
			return fmt.Errorf("interval %v is not whole microseconds between %v and %v", iv, minBFDInterval, maxBFDInterval)
		}
	}
	if b.DetectMultiplier < 2 {
		return fmt.Errorf("detect multiplier %d is below 2", b.DetectMultiplier)
	}
	return nil
}

func effectiveHold(p PeerConfig) time.Duration {
	if p.HoldTime == 0 {
		return 90 * time.Second
	}
	return p.HoldTime
}

// effectiveKeepalive follows the protocol's advice of a third of the hold time.
func effectiveKeepalive(p PeerConfig) time.Duration {
	if p.KeepaliveTime != 0 {
		return p.KeepaliveTime
	}
	return (effectiveHold(p) / 3).Truncate(time.Second)
}

// crossFamilyNextHop is the next hop the peer gets for paths of the other
// family than its session address, if it gets them at all.
func crossFamilyNextHop(p PeerConfig) (netip.Addr, bool) {
	if !p.DualStack {
		return netip.Addr{}, false
	}
	if p.Address.Is4() {
		return p.NextHopIPv6, true
	}
	return p.NextHopIPv4, true
}

// peerEqual reports whether a session can stay as it is.
func peerEqual(a, b PeerConfig) bool { return a == b }

package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// Sentinel errors for address entries, checked with errors.Is.
var (
	// ErrInvalidAddress: the entry is neither a CIDR nor a "start-end" range
	// of two plain IP addresses.
	ErrInvalidAddress = errors.New("not a CIDR or start-end range")
	// ErrReversedRange: the start of a range is after its end.
	ErrReversedRange = errors.New("range start is after its end")
	// ErrMixedFamily: one end of a range is IPv4, the other IPv6.
	ErrMixedFamily = errors.New("range mixes IPv4 and IPv6")
	// ErrWholeFamily: the entry covers every address of its family (a /0),
	// which would hand out addresses the cluster cannot own.
	ErrWholeFamily = errors.New("entry covers the whole address family (/0)")
)

// ParseAddress parses one IPAddressPool address entry: a CIDR
// ("10.0.0.0/24", host bits allowed and masked off, as the CRD accepts them)
// or an inclusive range "start-end" with optional spaces around the '-'.
func ParseAddress(entry string) (netipx.IPRange, error) {
	if !strings.Contains(entry, "-") {
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			return netipx.IPRange{}, fmt.Errorf("%w: %s", ErrInvalidAddress, reason(err))
		}
		if p.Addr().Is4In6() {
			return netipx.IPRange{}, fmt.Errorf("%w: IPv4-mapped IPv6 address, write the IPv4 form", ErrInvalidAddress)
		}
		if p.Bits() == 0 {
			return netipx.IPRange{}, ErrWholeFamily
		}
		return netipx.RangeOfPrefix(p.Masked()), nil
	}
	startText, endText, _ := strings.Cut(entry, "-")
	start, err := parseRangeEnd(startText)
	if err != nil {
		return netipx.IPRange{}, fmt.Errorf("start: %w", err)
	}
	end, err := parseRangeEnd(endText)
	if err != nil {
		return netipx.IPRange{}, fmt.Errorf("end: %w", err)
	}
	if start.Is4() != end.Is4() {
		return netipx.IPRange{}, ErrMixedFamily
	}
	if end.Less(start) {
		return netipx.IPRange{}, ErrReversedRange
	}
	r := netipx.IPRangeFrom(start, end)
	if p, ok := r.Prefix(); ok && p.Bits() == 0 {
		return netipx.IPRange{}, ErrWholeFamily
	}
	return r, nil
}

func parseRangeEnd(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrInvalidAddress, reason(err))
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: zoned address %q", ErrInvalidAddress, a)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%w: IPv4-mapped IPv6 address, write the IPv4 form", ErrInvalidAddress)
	}
	return a, nil
}

// reason drops the `netip.ParsePrefix("...")` head of a netip error: the
// message Resolve builds already quotes the entry.
func reason(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, "): "); ok {
		return after
	}
	return msg
}

// ParseAddresses parses every entry with ParseAddress and returns one range
// per entry, in order. Overlaps between entries are not its concern: Resolve
// reports those with the objects named. The error names the first bad entry
// by index and value.
func ParseAddresses(entries []string) ([]netipx.IPRange, error) {
	out := make([]netipx.IPRange, 0, len(entries))
	for i, e := range entries {
		r, err := ParseAddress(e)
		if err != nil {
			return nil, fmt.Errorf("parse addresses[%d] %q: %w", i, e, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// FormatRange writes r the way ParseAddress reads it back: as a CIDR when r
// is exactly one prefix, else as "start-end".
func FormatRange(r netipx.IPRange) string {
	if p, ok := r.Prefix(); ok {
		return p.String()
	}
	return r.From().String() + "-" + r.To().String()
}

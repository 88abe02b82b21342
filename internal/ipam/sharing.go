package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
)

// conflict returns why r's service may not hold x next to its current
// holders: *AddressInUseError, *SharingError, or nil.
func (a *Allocator) conflict(x netip.Addr, r *request) error {
	return a.conflictAt(a.holdings[key16(x)], r)
}

func (a *Allocator) conflictAt(h *holding, r *request) error {
	if h == nil {
		return nil
	}
	others := 0
	for _, s := range h.holders {
		if s.name != r.svc {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	if r.key == "" || h.key == "" {
		return &AddressInUseError{Addr: h.addr, By: h.names(r.svc)}
	}
	reason := ""
	switch {
	case r.key != h.key:
		reason = fmt.Sprintf("its sharing key is %q, this service's is %q", h.key, r.key)
	case r.compat != h.compat:
		reason = fmt.Sprintf("its services need %q to share, this service has %q", h.compat, r.compat)
	default:
		reason = a.portClash(h, r)
	}
	if reason == "" {
		return nil
	}
	return &SharingError{Addr: h.addr, By: h.names(r.svc), Reason: reason}
}

func (a *Allocator) portClash(h *holding, r *request) string {
	for _, s := range h.holders {
		if s.name == r.svc {
			continue
		}
		// Both port lists are sorted: walk them together.
		i, j := 0, 0
		for i < len(s.ports) && j < len(r.ports) {
			p, q := s.ports[i], r.ports[j]
			c := cmp.Or(strings.Compare(p.Protocol, q.Protocol), cmp.Compare(p.Port, q.Port))
			switch {
			case c == 0:
				return fmt.Sprintf("port %v is used by %q", p, s.name)
			case c < 0:
				i++
			default:
				j++
			}
		}
	}
	return ""
}

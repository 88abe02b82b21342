package speaker

import (
	"context"
	"net/netip"
	"slices"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// responders adapts speaker/layer2 to Announcer.
type responders struct {
	responders *layer2.Responders
}

func newResponders(o Options, log logr.Logger) *responders {
	return &responders{responders: layer2.New(layer2.Config{
		ExcludedPrefixes: o.ExcludeInterfaces,
		Logger:           log.WithName("layer2"),
	})}
}

// Sync hands the addresses to the responders. An address announced for two
// Services (a shared IP) is answered on the union of their interfaces.
func (a *responders) Sync(ctx context.Context, announce []Announcement) error {
	owned := make(map[netip.Addr][]string, len(announce))
	everywhere := map[netip.Addr]bool{}
	for _, an := range announce {
		if len(an.Interfaces) == 0 {
			everywhere[an.Addr] = true
		}
		owned[an.Addr] = append(owned[an.Addr], an.Interfaces...)
	}
	for addr, ifs := range owned {
		if everywhere[addr] {
			owned[addr] = nil
			continue
		}
		slices.Sort(ifs)
		owned[addr] = slices.Compact(ifs)
	}
	return a.responders.Sync(ctx, owned)
}

// Owned reports, per interface, the addresses answered for.
func (a *responders) Owned() map[string][]netip.Addr { return a.responders.Owned() }

// Stats are the responders' packet counters.
func (a *responders) Stats() layer2.Stats { return a.responders.Stats() }

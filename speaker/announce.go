package speaker

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// responders adapts speaker/layer2 to Announcer.
type responders struct {
	responders *layer2.Responders

	mu sync.Mutex
	// seen is the membership the last announcements were computed from;
	// nil before the first.
	seen []string
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

// membershipObserver is implemented by announcers that act on membership
// changes themselves (re-announcing after a heal); the reconciler tells them
// the view each Sync was computed from, right after that Sync.
type membershipObserver interface {
	membersSeen(alive []string)
}

// membersSeen is told the membership view the announcements just synced
// were computed from. When a member appears that was not in the previous
// view (a healed partition, a node whose link or speaker came back), every
// address this node still owns is announced again: while the two sides
// could not hear each other the other side may have won and announced
// some of them, and neighbours that followed it would otherwise keep
// sending to a node that has gone silent until their entries go stale
// (seconds to minutes). A fresh member costs a few redundant gratuitous
// frames per address.
func (a *responders) membersSeen(alive []string) {
	a.mu.Lock()
	prev := a.seen
	a.seen = slices.Clone(alive)
	a.mu.Unlock()
	if prev == nil {
		return
	}
	for _, n := range alive {
		if !slices.Contains(prev, n) {
			a.responders.Reannounce()
			return
		}
	}
}

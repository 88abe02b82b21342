// Package election picks the node that announces a service address in
// layer-2 mode.
//
// The owner is the rendezvous-hash (highest random weight) winner of the
// address among the candidate nodes: every node scores hash(node, address)
// and the highest score wins. Every speaker computes the same answer from the
// same inputs without talking to the others, the order of the candidates
// does not matter, and when a node leaves only the addresses it won move,
// each to its own runner-up, so load stays spread.
//
// The hash is FNV-1a 64 over the node name and the 16-byte form of the
// address, passed through a 64-bit finaliser. FNV alone is fast but mixes its
// last input bytes poorly, which skews winners when node names differ only in
// a suffix ("node-1", "node-2"); the finaliser restores avalanche. The
// function is fixed: changing it moves addresses between nodes during a
// rolling upgrade, so it must never depend on process state (no maphash).
package election

import (
	"net/netip"
	"slices"
	"strings"
)

// Winner returns the candidate that owns addr, or false when there are no
// candidates. Duplicate candidates count once.
func Winner(addr netip.Addr, candidates []string) (string, bool) {
	var (
		best      string
		bestScore uint64
		found     bool
	)
	a := addr.Unmap().As16()
	for _, node := range candidates {
		s := score(node, a)
		// Ties (astronomically rare) go to the smaller name so the answer
		// stays independent of input order.
		if !found || s > bestScore || (s == bestScore && node < best) {
			best, bestScore, found = node, s, true
		}
	}
	return best, found
}

// Ranked returns the distinct candidates ordered from owner to last resort:
// Ranked(addr, c)[0] is Winner(addr, c), and removing it makes the next one
// the winner.
func Ranked(addr netip.Addr, candidates []string) []string {
	a := addr.Unmap().As16()
	type scored struct {
		node  string
		score uint64
	}
	all := make([]scored, 0, len(candidates))
	for _, node := range candidates {
		all = append(all, scored{node, score(node, a)})
	}
	slices.SortFunc(all, func(x, y scored) int {
		switch {
		case x.score > y.score:
			return -1
		case x.score < y.score:
			return 1
		}
		return strings.Compare(x.node, y.node)
	})
	out := make([]string, 0, len(all))
	for i, s := range all {
		if i > 0 && all[i-1].node == s.node {
			continue
		}
		out = append(out, s.node)
	}
	return out
}

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// score is inlined FNV-1a rather than hash/fnv so that scoring allocates
// nothing: it runs nodes x addresses times on every membership change.
func score(node string, addr [16]byte) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= fnvPrime64
	}
	// A separator keeps ("ab", addr) and ("a", "b"+addr) apart.
	h ^= 0xff
	h *= fnvPrime64
	for _, b := range addr {
		h ^= uint64(b)
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the MurmurHash3 64-bit finaliser.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

package bgp

// A router, or whatever reaches the speaker's sessions, must not be able to
// stop the speaker (malformed UPDATEs, the 2026 GoBGP advisories' classes)
// or fill its memory (a prefix flood).

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// malformedUpdate is one UPDATE a broken or hostile peer sends.
type malformedUpdate struct {
	name string
	// fourOctet: the session negotiates 4-octet ASNs.
	fourOctet bool
	// keep: the speaker keeps the session (RFC 7606 treat-as-withdraw or
	// attribute discard) instead of resetting it.
	keep bool
	// valid: the server finds nothing wrong (RFC 4271 leaves the check
	// optional), so there is no error to report.
	valid bool
	body  []byte
}

var (
	rawPeerAddr = lo3
	rawPeerASN  = uint32(64514)
	floodNLRI   = netip.MustParsePrefix("10.1.0.0/24")
)

func malformedUpdates() []malformedUpdate {
	nh := nextHop(rawPeerAddr)
	path := asPath(true, rawPeerASN)
	return []malformedUpdate{
		// GO-2026-4736 / CVE-2026-30405: panicked v3's UPDATE validation.
		{"zero-length NEXT_HOP without the transitive flag", true, true, false,
			update([][]byte{origin(), path, attr(0, 3, nil)}, floodNLRI)},
		{"zero-length NEXT_HOP", true, true, false,
			update([][]byte{origin(), path, attr(flagTransitive, 3, nil)}, floodNLRI)},
		{"NEXT_HOP without the transitive flag", true, true, false,
			update([][]byte{origin(), path, attr(0, 3, nh[3:])}, floodNLRI)},
		{"unknown well-known attribute", true, false, false,
			update([][]byte{origin(), path, nh, attr(flagTransitive, 0xf0, []byte{1, 2, 3})}, floodNLRI)},
		{"AS4_PATH longer than AS_PATH", false, true, false,
			update([][]byte{origin(), asPath(false, rawPeerASN), nh,
				attr(flagOptional|flagTransitive, 17, asSeq(true, rawPeerASN, 4200000000, 4200000001))}, floodNLRI)},
		{"AS4_PATH with a zero-length segment", false, true, false,
			update([][]byte{origin(), asPath(false, rawPeerASN), nh,
				attr(flagOptional|flagTransitive, 17, []byte{2, 0})}, floodNLRI)},
		{"AS4_PATH on a 4-octet session", true, true, true,
			update([][]byte{origin(), path, nh,
				attr(flagOptional|flagTransitive, 17, asSeq(true, 4200000000))}, floodNLRI)},
		{"zero-length AS_PATH", true, true, true,
			update([][]byte{origin(), attr(flagTransitive, 2, nil), nh}, floodNLRI)},
		{"AS_PATH segment of zero ASNs", true, true, false,
			update([][]byte{origin(), attr(flagTransitive, 2, []byte{2, 0}), nh}, floodNLRI)},
		{"AS_PATH segment longer than the attribute", true, true, false,
			update([][]byte{origin(), attr(flagTransitive, 2, []byte{2, 5, 0, 0, 0xfc, 2}), nh}, floodNLRI)},
		{"attribute longer than the attributes' total", true, true, false,
			func() []byte {
				b := update([][]byte{origin(), path, nh}, floodNLRI)
				b[len(b)-4-len(nh)+2] = 40 // NEXT_HOP claims 40 bytes
				return b
			}()},
		{"total attribute length beyond the message", true, false, false,
			func() []byte {
				b := update([][]byte{origin(), path, nh}, floodNLRI)
				binary.BigEndian.PutUint16(b[2:], 4000)
				return b
			}()},
		{"ORIGIN of three bytes", true, true, false,
			update([][]byte{attr(flagTransitive, 1, []byte{0, 0, 0}), path, nh}, floodNLRI)},
		{"MP_REACH_NLRI with no next hop and a truncated prefix", true, false, false,
			update([][]byte{origin(), path, attr(flagOptional, 14, []byte{0, 2, 1, 0, 0, 128, 0x20})})},
		{"COMMUNITIES of three bytes", true, true, false,
			update([][]byte{origin(), path, nh, attr(flagOptional|flagTransitive, 8, []byte{1, 2, 3})}, floodNLRI)},
		{"LARGE_COMMUNITY of eleven bytes", true, true, false,
			update([][]byte{origin(), path, nh, attr(flagOptional|flagTransitive, 32, make([]byte, 11))}, floodNLRI)},
		{"NLRI prefix length 33", true, false, false,
			append(update([][]byte{origin(), path, nh}), 33, 10, 0, 0, 0, 0)},
	}
}

// TestMalformedUpdatesDoNotStopTheSpeaker sends each malformed UPDATE over a
// session of its own while another router keeps a session with the same
// speaker. The speaker must survive (a panic in the server ends the test
// binary), report the session's error, and keep advertising to the other
// router throughout.
func TestMalformedUpdatesDoNotStopTheSpeaker(t *testing.T) {
	ctx := context.Background()
	healthy := newTestRouter(t, lo2, 64513, map[netip.Addr]uint32{lo1: 64512})
	s, stop := runSpeaker(t, lo1)
	vip := netip.MustParsePrefix("172.25.254.60/32")
	if err := s.SyncPaths(ctx, []Path{{Prefix: vip}}); err != nil {
		t.Fatalf("SyncPaths() = %v", err)
	}
	tor := healthy.peerConfig("tor", 64512, lo1)
	for i, tc := range malformedUpdates() {
		t.Run(tc.name, func(t *testing.T) {
			// An address of its own per case: the server may still report
			// the previous session's end after the peer is re-created.
			raw := newRawPeer(t, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), rawPeerASN, tc.fourOctet)
			if err := s.SyncPeers(ctx, []PeerConfig{tor, raw.peerConfig("hostile", 64512, lo1)}); err != nil {
				t.Fatalf("SyncPeers() = %v", err)
			}
			sess := raw.establish(t)
			sess.send(msgUpdate, tc.body)
			if tc.valid {
				// Nothing to report: the session must simply stay, and a
				// keepalive from the speaker shows it still serves it.
				for typ := byte(0); typ != msgKeepalive; {
					if typ, _ = sess.read(); typ != msgKeepalive && typ != msgUpdate {
						t.Fatalf("speaker sent message type %d after the UPDATE, want UPDATEs and a KEEPALIVE", typ)
					}
				}
				if st := peerState(t, s, "hostile"); !st.Up || st.LastError != "" {
					t.Errorf("hostile session: up %v, last error %q; want up without error", st.Up, st.LastError)
				}
				return
			}
			eventually(t, sessionTimeout, "session error reported", func() string {
				if st := peerState(t, s, "hostile"); st.LastError == "" {
					return "hostile session has no last error"
				}
				return ""
			})
			if tc.keep {
				// RFC 7606: the UPDATE is treated as a withdrawal or the
				// attribute discarded, and the session stays.
				if st := peerState(t, s, "hostile"); !st.Up {
					t.Errorf("hostile session is %s, want it kept (the UPDATE treated as withdraw): %s", st.State, st.LastError)
				}
			} else {
				code, sub, err := sess.closedBySpeaker(time.Now().Add(sessionTimeout))
				if err != nil {
					t.Fatalf("speaker did not reset the session: %v", err)
				}
				if code != 3 { // UPDATE Message Error
					t.Errorf("speaker's NOTIFICATION = %d/%d, want 3 (UPDATE message error)/any", code, sub)
				}
				eventually(t, sessionTimeout, "session down", func() string {
					if st := peerState(t, s, "hostile"); st.Up {
						return "hostile session is still up"
					}
					return ""
				})
			}
			t.Logf("reported: %s", peerState(t, s, "hostile").LastError)
			eventually(t, sessionTimeout, "other router keeps the path", func() string {
				if !healthy.sessionUp(t, lo1) {
					return "router session with speaker is down"
				}
				return wantRoutes(t, healthy, map[netip.Prefix][]route{vip: {{NextHop: lo1}}})()
			})
		})
	}
	if err := stop(); err != nil {
		t.Fatalf("speaker stopped with %v after the malformed UPDATEs, want a clean stop", err)
	}
}

// TestPrefixFloodIsCut: a router announcing 100,000 prefixes has its
// session shut down at MaxReceivedPrefixes, the speaker says why, and what
// it received is not kept.
func TestPrefixFloodIsCut(t *testing.T) {
	const total = 100000
	ctx := context.Background()
	s, _ := runSpeaker(t, lo1)
	raw := newRawPeer(t, rawPeerAddr, rawPeerASN, true)
	if err := s.SyncPeers(ctx, []PeerConfig{raw.peerConfig("flood", 64512, lo1)}); err != nil {
		t.Fatalf("SyncPeers() = %v", err)
	}
	sess := raw.establish(t)
	base := heapInUse()

	// Sample the heap while the flood runs: what counts is the peak.
	var peak uint64
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			peak = max(peak, heapInUse())
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond): // sampling interval
			}
		}
	})
	attrs := [][]byte{origin(), asPath(true, rawPeerASN), nextHop(rawPeerAddr)}
	sent := 0
	for sent < total {
		batch := make([]netip.Prefix, 0, 800)
		for i := sent; i < min(total, sent+800); i++ {
			batch = append(batch, hostPrefix(i))
		}
		if err := sess.write(msgUpdate, update(attrs, batch...)); err != nil {
			break // the speaker closed the session
		}
		sent += len(batch)
	}
	eventually(t, sessionTimeout, "flood session shut down", func() string {
		st := peerState(t, s, "flood")
		if st.Up || st.LastError != prefixLimitError {
			return fmt.Sprintf("flood session: up %v, last error %q", st.Up, st.LastError)
		}
		return ""
	})
	close(done)
	wg.Wait()
	after := heapInUse()
	t.Logf("prefixes written before the speaker closed: %d; heap in use: before %d MiB, peak %d MiB, after %d MiB", sent, base>>20, peak>>20, after>>20)
	// 100,000 kept paths take well over 100 MiB; the bound leaves room for
	// MaxReceivedPrefixes held until the limit trips.
	const allowed = 48 << 20
	if peak > base+allowed {
		t.Errorf("heap in use peaked at %d MiB, %d MiB over the %d MiB before the flood; want at most %d MiB more", peak>>20, (peak-base)>>20, base>>20, allowed>>20)
	}
	if after > base+allowed/4 {
		t.Errorf("heap in use after the flood = %d MiB, want within %d MiB of the %d MiB before: received routes are kept", after>>20, allowed>>22, base>>20)
	}
}

// hostPrefix is the i-th /32 of 10.0.0.0/8, skipping nothing: distinct
// prefixes for i below 2^24.
func hostPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func peerState(t *testing.T, s *Speaker, name string) PeerState {
	t.Helper()
	sts, err := s.PeerStates(context.Background())
	if err != nil {
		t.Fatalf("PeerStates() = %v", err)
	}
	for _, st := range sts {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("PeerStates() has no peer %q: %+v", name, sts)
	return PeerState{}
}

// FuzzReceivedUpdate drives the decode and validation path every received
// UPDATE takes in the embedded server: it must return an error, never
// panic, whatever the bytes.
func FuzzReceivedUpdate(f *testing.F) {
	for _, tc := range malformedUpdates() {
		f.Add(tc.body)
	}
	f.Add(update([][]byte{origin(), asPath(true, rawPeerASN), nextHop(rawPeerAddr)}, floodNLRI))
	families := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_NONE, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_NONE}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 4096-19 {
			return
		}
		msg := make([]byte, 19, 19+len(body))
		for i := range 16 {
			msg[i] = 0xff
		}
		binary.BigEndian.PutUint16(msg[16:], uint16(19+len(body)))
		msg[18] = msgUpdate
		m, err := bgp.ParseBGPMessage(append(msg, body...))
		if err != nil {
			return
		}
		u, ok := m.Body.(*bgp.BGPUpdate)
		if !ok {
			t.Fatalf("an UPDATE decoded as %T", m.Body)
		}
		for _, ebgp := range []bool{true, false} {
			_, _ = bgp.ValidateUpdateMsg(u, families, ebgp, false, false)
		}
	})
}

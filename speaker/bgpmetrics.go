package speaker

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// Per-peer BGP metrics, read from the speaker at scrape time so that they
// can never disagree with the sessions. The peer label is the BGPPeer's
// name. The last error is the text PeerState carries; the speaker never
// puts a password in it.
var (
	bgpSessionUpDesc = prometheus.NewDesc("ironlb_bgp_session_up",
		"1 when the BGP session with the peer is established, else 0.", []string{"peer"}, nil)
	bgpPrefixesDesc = prometheus.NewDesc("ironlb_bgp_announced_prefixes",
		"Prefixes currently advertised to the peer.", []string{"peer"}, nil)
	bgpUpdatesDesc = prometheus.NewDesc("ironlb_bgp_updates_sent_total",
		"BGP UPDATE messages sent to the peer; restarts when the peer's configuration changes.", []string{"peer"}, nil)
	bgpLastErrorDesc = prometheus.NewDesc("ironlb_bgp_session_last_error_info",
		"The last reason the session with the peer failed or could not be configured, as a series set to 1; absent when none.", []string{"peer", "error"}, nil)
	bgpBFDDesc = prometheus.NewDesc("ironlb_bgp_bfd_session_up",
		"1 when the BFD session with the peer is up, else 0; absent for peers without BFD.", []string{"peer"}, nil)
	bgpBFDStateDesc = prometheus.NewDesc("ironlb_bgp_bfd_session_state_info",
		"The BFD session's state (up, down, init, admindown) with the peer, as a series set to 1; absent for peers without BFD.", []string{"peer", "state"}, nil)
)

// bgpScrapeTimeout bounds how long a scrape waits for the speaker, which
// is busy while it applies a large change.
const bgpScrapeTimeout = 5 * time.Second

// bgpCollector reports the BGP mode's peers.
type bgpCollector struct{ mode *bgpMode }

func (c bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{bgpSessionUpDesc, bgpPrefixesDesc, bgpUpdatesDesc, bgpLastErrorDesc, bgpBFDDesc, bgpBFDStateDesc} {
		ch <- d
	}
}

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), bgpScrapeTimeout)
	defer cancel()
	states, err := c.mode.peerStates(ctx)
	if err != nil {
		c.mode.log.Error(err, "read bgp peers for metrics")
		return
	}
	for _, st := range states {
		up := 0.0
		if st.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(bgpSessionUpDesc, prometheus.GaugeValue, up, st.Name)
		ch <- prometheus.MustNewConstMetric(bgpPrefixesDesc, prometheus.GaugeValue, float64(st.Advertised), st.Name)
		ch <- prometheus.MustNewConstMetric(bgpUpdatesDesc, prometheus.CounterValue, float64(st.UpdatesSent), st.Name)
		if st.LastError != "" {
			ch <- prometheus.MustNewConstMetric(bgpLastErrorDesc, prometheus.GaugeValue, 1, st.Name, st.LastError)
		}
		if st.BFDState != "" {
			bfdUp := 0.0
			if st.BFDState == "up" {
				bfdUp = 1
			}
			ch <- prometheus.MustNewConstMetric(bgpBFDDesc, prometheus.GaugeValue, bfdUp, st.Name)
			ch <- prometheus.MustNewConstMetric(bgpBFDStateDesc, prometheus.GaugeValue, 1, st.Name, st.BFDState)
		}
	}
}

// registerBGPMetrics registers the BGP mode's collector; a second manager in
// one process (tests) keeps the first one's.
func registerBGPMetrics(reg prometheus.Registerer, mode *bgpMode) error {
	_, err := register[prometheus.Collector](reg, bgpCollector{mode: mode})
	return err
}

// peerStates are the speaker's peers; none while no peer selects the node.
func (b *bgpMode) peerStates(ctx context.Context) ([]bgp.PeerState, error) {
	b.mu.Lock()
	s := b.speaker
	b.mu.Unlock()
	if s == nil {
		return nil, nil
	}
	return s.PeerStates(ctx)
}

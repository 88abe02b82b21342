package speaker

import (
	"errors"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// metricSet holds the speaker's collectors, registered once per registry.
type metricSet struct {
	announced prometheus.Gauge
	takeovers prometheus.Counter
	members   prometheus.Gauge
	// forwarderBackend has one series, set to 1, naming the backend chosen.
	forwarderBackend *prometheus.GaugeVec
}

// statsReporter is implemented by announcers that count packets.
type statsReporter interface {
	Stats() layer2.Stats
}

func newMetrics(reg prometheus.Registerer, a Announcer) (*metricSet, error) {
	m := &metricSet{
		announced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_layer2_addresses_announced",
			Help: "Service addresses this node answers ARP/NDP for.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ironlb_layer2_takeovers_total",
			Help: "Service addresses this node started announcing.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_election_members",
			Help: "Speakers alive in memberlist, as this node sees them.",
		}),
		forwarderBackend: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ironlb_forwarder_backend_info",
			Help: "The forwarding backend this speaker runs (ipvs, nftables or off), as a series set to 1.",
		}, []string{"backend"}),
	}
	var err error
	if m.announced, err = register(reg, m.announced); err != nil {
		return nil, err
	}
	if m.takeovers, err = register(reg, m.takeovers); err != nil {
		return nil, err
	}
	if m.members, err = register(reg, m.members); err != nil {
		return nil, err
	}
	if m.forwarderBackend, err = register(reg, m.forwarderBackend); err != nil {
		return nil, err
	}
	if s, ok := a.(statsReporter); ok {
		for _, c := range []prometheus.Collector{
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "ironlb_layer2_requests_answered_total",
				Help:        "ARP requests and neighbor solicitations answered.",
				ConstLabels: prometheus.Labels{"protocol": "arp"},
			}, func() float64 { return float64(s.Stats().ARPAnswered) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "ironlb_layer2_requests_answered_total",
				Help:        "ARP requests and neighbor solicitations answered.",
				ConstLabels: prometheus.Labels{"protocol": "ndp"},
			}, func() float64 { return float64(s.Stats().NDPAnswered) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "ironlb_layer2_announcements_total",
				Help: "Gratuitous ARP / unsolicited neighbor advertisement rounds sent.",
			}, func() float64 { return float64(s.Stats().Announcements) }),
		} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// register registers c, or returns the collector registered before under
// the same name (a second manager in one process, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *metricSet) observe(announced []Announcement, members int) {
	addrs := map[netip.Addr]bool{}
	for _, a := range announced {
		addrs[a.Addr] = true
	}
	m.announced.Set(float64(len(addrs)))
	m.members.Set(float64(members))
}

package layer2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// DefaultExcludedPrefixes name interfaces that are never announced on unless
// named explicitly: pod veths and overlay devices of common CNIs, and
// kube-proxy's dummy interface that holds service addresses.
var DefaultExcludedPrefixes = []string{"cali", "cilium_", "lxc", "flannel", "vxlan", "cni", "kube-ipvs", "docker", "tunl", "genev", "nodelocaldns"}

// Config configures Responders.
type Config struct {
	// Schedule of announcements after gaining an address; nil means
	// DefaultSchedule.
	Schedule []time.Duration
	// ExcludedPrefixes of interface names skipped when an address names no
	// interface; nil means DefaultExcludedPrefixes.
	ExcludedPrefixes []string
	// Resync is how often Start re-reads the interfaces and restarts
	// responders whose sockets failed (default 5 s).
	Resync time.Duration
	Logger logr.Logger

	// Interfaces lists the node's interfaces (default net.Interfaces).
	Interfaces func() ([]net.Interface, error)
	// Dial opens an interface's sockets (default DialConns).
	Dial func(*net.Interface) (Conns, error)
	// enslaved reports whether an interface is a bridge or bond member
	// (default: it has a master in sysfs).
	enslaved func(name string) bool
}

// Responders keeps one Responder per interface that has addresses to answer
// for, driven by Sync.
type Responders struct {
	cfg      Config
	log      logr.Logger
	counters counters

	mu      sync.Mutex
	desired map[netip.Addr][]string
	ctx     context.Context // set by Start
	running map[string]*running
	wg      sync.WaitGroup
}

type running struct {
	index  int
	resp   *Responder
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// New returns Responders; nothing runs until Start.
func New(cfg Config) *Responders {
	if cfg.ExcludedPrefixes == nil {
		cfg.ExcludedPrefixes = DefaultExcludedPrefixes
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Second
	}
	if cfg.Interfaces == nil {
		cfg.Interfaces = net.Interfaces
	}
	if cfg.Dial == nil {
		cfg.Dial = DialConns
	}
	if cfg.enslaved == nil {
		cfg.enslaved = hasMaster
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Responders{cfg: cfg, log: cfg.Logger, running: map[string]*running{}}
}

// Sync makes owned the complete set of addresses this node answers for. The
// value lists the interfaces to answer on; empty means every suitable
// interface (up, Ethernet, not loopback, not enslaved to a bridge or bond,
// not excluded by prefix). Called before Start, the state is applied when
// Start runs.
func (r *Responders) Sync(ctx context.Context, owned map[netip.Addr][]string) error {
	desired := make(map[netip.Addr][]string, len(owned))
	for a, ifs := range owned {
		desired[a.Unmap()] = slices.Clone(ifs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired = desired
	if r.ctx == nil {
		return nil
	}
	return r.applyLocked()
}

// Stats returns totals over all responders since New.
func (r *Responders) Stats() Stats { return r.counters.stats() }

// Owned returns, per interface, the addresses answered for now.
func (r *Responders) Owned() map[string][]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]netip.Addr{}
	for name, run := range r.running {
		if o := run.resp.Owned(); len(o) > 0 {
			out[name] = o
		}
	}
	return out
}

// Reannounce announces every address answered for again, on every
// interface, per the schedule (see Responder.Reannounce).
func (r *Responders) Reannounce() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, run := range r.running {
		run.resp.Reannounce()
	}
}

// Start applies the state given to Sync, then keeps it applied (new
// interfaces, failed sockets) until ctx ends, when every responder stops.
func (r *Responders) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.ctx != nil {
		r.mu.Unlock()
		return errors.New("responders already started")
	}
	r.ctx = ctx
	if err := r.applyLocked(); err != nil {
		r.log.Error(err, "cannot answer on every interface, retrying")
	}
	r.mu.Unlock()

	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			for name, run := range r.running {
				run.cancel()
				delete(r.running, name)
			}
			r.mu.Unlock()
			r.wg.Wait()
			return nil
		case <-tick.C:
			r.mu.Lock()
			if err := r.applyLocked(); err != nil {
				r.log.Error(err, "cannot answer on every interface, retrying")
			}
			r.mu.Unlock()
		}
	}
}

// applyLocked diffs the desired addresses per interface against the running
// responders.
func (r *Responders) applyLocked() error {
	ifaces, err := r.cfg.Interfaces()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	byName := make(map[string]net.Interface, len(ifaces))
	var suitable []string
	for _, ifi := range ifaces {
		byName[ifi.Name] = ifi
		if r.suitable(ifi) {
			suitable = append(suitable, ifi.Name)
		}
	}
	want := map[string][]netip.Addr{}
	for a, names := range r.desired {
		if len(names) == 0 {
			names = suitable
		}
		for _, n := range names {
			ifi, ok := byName[n]
			if !ok || ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 {
				continue
			}
			want[n] = append(want[n], a)
		}
	}

	var errs []error
	for name, run := range r.running {
		ifi, ok := byName[name]
		select {
		case <-run.done:
			if run.err != nil {
				errs = append(errs, run.err)
			}
		default:
			if _, wanted := want[name]; wanted && ok && ifi.Index == run.index {
				continue
			}
		}
		// Silence first, then close: no answer may leave after the loss.
		_ = run.resp.Set(nil)
		run.cancel()
		<-run.done
		delete(r.running, name)
	}
	for name, addrs := range want {
		run, ok := r.running[name]
		if !ok {
			ifi := byName[name]
			run, err = r.startLocked(ifi)
			if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := run.resp.Set(addrs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Responders) startLocked(ifi net.Interface) (*running, error) {
	conns, err := r.cfg.Dial(&ifi)
	if err != nil {
		return nil, err
	}
	resp, err := NewResponder(ifi, conns, ResponderConfig{
		Schedule: r.cfg.Schedule,
		Logger:   r.log,
		stats:    &r.counters,
		carrier:  r.carrier,
	})
	if err != nil {
		_ = conns.close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	run := &running{index: ifi.Index, resp: resp, cancel: cancel, done: make(chan struct{})}
	r.running[ifi.Name] = run
	r.wg.Go(func() {
		defer close(run.done)
		if err := resp.Start(ctx); err != nil {
			run.err = err
			r.log.Error(err, "responder stopped", "iface", ifi.Name)
		}
	})
	return run, nil
}

// carrier reports whether ifi is up with a link, as the interface list
// (which sees the sockets' namespace) shows it now.
func (r *Responders) carrier(ifi net.Interface) bool {
	ifaces, err := r.cfg.Interfaces()
	if err != nil {
		// Unknown: announcing is the safe side for an address we own.
		return true
	}
	for _, cur := range ifaces {
		if cur.Index == ifi.Index {
			return cur.Flags&net.FlagRunning != 0
		}
	}
	return false
}

func (r *Responders) suitable(ifi net.Interface) bool {
	if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagLoopback != 0 ||
		ifi.Flags&net.FlagBroadcast == 0 || len(ifi.HardwareAddr) != 6 {
		return false
	}
	for _, p := range r.cfg.ExcludedPrefixes {
		if strings.HasPrefix(ifi.Name, p) {
			return false
		}
	}
	// A bridge or bond member: its master answers for the segment.
	return !r.cfg.enslaved(ifi.Name)
}

func hasMaster(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name + "/master")
	return err == nil
}

package layer2

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// fakeConn is a net.PacketConn whose reads are fed by the test and whose
// writes the test reads back.
type fakeConn struct {
	in     chan []byte
	out    chan []byte
	once   sync.Once
	closed chan struct{}
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte, 16), out: make(chan []byte, 256), closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case f := <-c.in:
		return copy(b, f), &packet.Addr{HardwareAddr: net.HardwareAddr(f[6:12])}, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.out <- slices.Clone(b)
	return len(b), nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeConn) LocalAddr() net.Addr              { return &packet.Addr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) next(t *testing.T, what string) []byte {
	t.Helper()
	select {
	case f := <-c.out:
		return f
	case <-time.After(10 * time.Second):
		t.Fatalf("no frame written, want %s", what)
		return nil
	}
}

// fakeGroups records multicast membership.
type fakeGroups struct {
	mu     sync.Mutex
	joined map[netip.Addr]bool
}

func (g *fakeGroups) JoinGroup(a netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.joined == nil {
		g.joined = map[netip.Addr]bool{}
	}
	g.joined[a] = true
	return nil
}

func (g *fakeGroups) LeaveGroup(a netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.joined, a)
	return nil
}

func (g *fakeGroups) Close() error { return nil }

func (g *fakeGroups) groups() []netip.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []netip.Addr
	for a := range g.joined {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

package bgp

// A hand-written BGP peer that speaks raw bytes, so it can send what no
// well-behaved implementation would: malformed UPDATEs and floods.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

const (
	msgOpen         = 1
	msgUpdate       = 2
	msgNotification = 3
	msgKeepalive    = 4
)

// rawPeer listens for the speaker, which dials it.
type rawPeer struct {
	ln   net.Listener
	addr netip.Addr
	port uint16
	asn  uint32
	// fourOctet announces the 4-octet AS capability; without it the
	// session carries 2-octet AS_PATHs (and AS4_PATH).
	fourOctet bool
}

func newRawPeer(t *testing.T, addr netip.Addr, asn uint32, fourOctet bool) *rawPeer {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("raw peer listen on %v: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return &rawPeer{ln: ln, addr: addr, port: uint16(ln.Addr().(*net.TCPAddr).Port), asn: asn, fourOctet: fourOctet}
}

// peerConfig is how the speaker reaches this peer (eBGP). The speaker sends
// a keepalive every second, so a test can tell within a second that it
// still serves the session.
func (p *rawPeer) peerConfig(name string, myASN uint32, source netip.Addr) PeerConfig {
	return PeerConfig{
		Name: name, Address: p.addr, Port: p.port, MyASN: myASN, PeerASN: p.asn, SourceAddress: source,
		ConnectTime: time.Second, KeepaliveTime: time.Second,
	}
}

// rawSession is one established session from the peer's side.
type rawSession struct {
	t    *testing.T
	conn net.Conn
}

// establish accepts the speaker's connection and completes the OPEN
// exchange.
func (p *rawPeer) establish(t *testing.T) *rawSession {
	t.Helper()
	if err := p.ln.(*net.TCPListener).SetDeadline(time.Now().Add(sessionTimeout)); err != nil {
		t.Fatalf("raw peer: %v", err)
	}
	conn, err := p.ln.Accept()
	if err != nil {
		t.Fatalf("raw peer: speaker did not connect: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &rawSession{t: t, conn: conn}
	typ, _ := s.read()
	if typ != msgOpen {
		t.Fatalf("raw peer: first message type %d, want OPEN", typ)
	}
	s.send(msgOpen, p.open())
	s.send(msgKeepalive, nil)
	for {
		typ, body := s.read()
		switch typ {
		case msgKeepalive:
			return s
		case msgNotification:
			t.Fatalf("raw peer: speaker refused the OPEN: notification % x", body)
		}
	}
}

func (p *rawPeer) open() []byte {
	caps := []byte{1, 4, 0, 1, 0, 1} // multiprotocol IPv4 unicast
	as2 := uint16(p.asn)
	if p.fourOctet {
		caps = binary.BigEndian.AppendUint32(append(caps, 65, 4), p.asn)
		if p.asn > 0xffff {
			as2 = 23456 // AS_TRANS
		}
	}
	b := []byte{4}
	b = binary.BigEndian.AppendUint16(b, as2)
	b = binary.BigEndian.AppendUint16(b, 90) // hold time
	b = append(b, 10, 255, 255, 9)           // BGP identifier
	param := append([]byte{2, byte(len(caps))}, caps...)
	return append(append(b, byte(len(param))), param...)
}

func (s *rawSession) send(typ byte, body []byte) {
	s.t.Helper()
	if err := s.write(typ, body); err != nil {
		s.t.Fatalf("raw peer: send message type %d: %v", typ, err)
	}
}

// write sends one message; it fails once the speaker has closed the
// session.
func (s *rawSession) write(typ byte, body []byte) error {
	msg := make([]byte, 19, 19+len(body))
	for i := range 16 {
		msg[i] = 0xff
	}
	binary.BigEndian.PutUint16(msg[16:], uint16(19+len(body)))
	msg[18] = typ
	if err := s.conn.SetWriteDeadline(time.Now().Add(sessionTimeout)); err != nil {
		return err
	}
	_, err := s.conn.Write(append(msg, body...))
	return err
}

func (s *rawSession) read() (byte, []byte) {
	s.t.Helper()
	typ, body, err := s.tryRead()
	if err != nil {
		s.t.Fatalf("raw peer: read: %v", err)
	}
	return typ, body
}

func (s *rawSession) tryRead() (byte, []byte, error) {
	return s.readBy(time.Now().Add(sessionTimeout))
}

func (s *rawSession) readBy(deadline time.Time) (byte, []byte, error) {
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return 0, nil, err
	}
	hdr := make([]byte, 19)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[16:]))
	if n < 19 {
		return 0, nil, fmt.Errorf("message length %d", n)
	}
	body := make([]byte, n-19)
	if _, err := io.ReadFull(s.conn, body); err != nil {
		return 0, nil, err
	}
	return hdr[18], body, nil
}

// closedBySpeaker reads until the speaker ends the session and returns the
// NOTIFICATION it sent (code, subcode), or zeros when it just closed. It
// fails if the session is still open at the deadline.
func (s *rawSession) closedBySpeaker(deadline time.Time) (code, subcode byte, err error) {
	for {
		typ, body, err := s.readBy(deadline)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return 0, 0, nil
			}
			return 0, 0, err
		}
		if typ == msgNotification && len(body) >= 2 {
			return body[0], body[1], nil
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// Path attribute builders; flags are given explicitly so tests can get
// them wrong.
const (
	flagOptional   = 0x80
	flagTransitive = 0x40
)

func attr(flags, typ byte, value []byte) []byte {
	return append([]byte{flags, typ, byte(len(value))}, value...)
}

func origin() []byte { return attr(flagTransitive, 1, []byte{0}) }

// asPath is one AS_SEQUENCE of 4-octet (wide) or 2-octet ASNs.
func asPath(wide bool, asns ...uint32) []byte {
	return attr(flagTransitive, 2, asSeq(wide, asns...))
}

func asSeq(wide bool, asns ...uint32) []byte {
	v := []byte{2, byte(len(asns))}
	for _, a := range asns {
		if wide {
			v = binary.BigEndian.AppendUint32(v, a)
		} else {
			v = binary.BigEndian.AppendUint16(v, uint16(a))
		}
	}
	return v
}

func nextHop(a netip.Addr) []byte {
	b := a.As4()
	return attr(flagTransitive, 3, b[:])
}

// update builds an UPDATE body from raw attributes and IPv4 NLRI.
func update(attrs [][]byte, nlri ...netip.Prefix) []byte {
	var pa []byte
	for _, a := range attrs {
		pa = append(pa, a...)
	}
	b := binary.BigEndian.AppendUint16(nil, 0) // no withdrawn routes
	b = binary.BigEndian.AppendUint16(b, uint16(len(pa)))
	b = append(b, pa...)
	return appendNLRI(b, nlri...)
}

func appendNLRI(b []byte, nlri ...netip.Prefix) []byte {
	for _, p := range nlri {
		a := p.Addr().As4()
		b = append(b, byte(p.Bits()))
		b = append(b, a[:(p.Bits()+7)/8]...)
	}
	return b
}

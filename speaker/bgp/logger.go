package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter sends the embedded server's logs to logr and notes why
// sessions fail, for PeerState.LastError.
type logAdapter struct {
	log      logr.Logger
	noteDown func(netip.Addr, string)
}

var _ gobgplog.Logger = (*logAdapter)(nil)

func (l *logAdapter) Panic(msg string, f gobgplog.Fields) { l.emit(0, true, msg, f) }
func (l *logAdapter) Fatal(msg string, f gobgplog.Fields) { l.emit(0, true, msg, f) }
func (l *logAdapter) Error(msg string, f gobgplog.Fields) { l.emit(0, true, msg, f) }
func (l *logAdapter) Warn(msg string, f gobgplog.Fields)  { l.emit(0, false, msg, f) }
func (l *logAdapter) Info(msg string, f gobgplog.Fields)  { l.emit(1, false, msg, f) }
func (l *logAdapter) Debug(msg string, f gobgplog.Fields) { l.emit(2, false, msg, f) }

// SetLevel is ignored: verbosity belongs to the logr backend.
func (l *logAdapter) SetLevel(gobgplog.LogLevel) {}

// GetLevel is always debug so the server hands over the connect failures we
// record; logr's verbosity filters what is printed.
func (l *logAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.DebugLevel }

func (l *logAdapter) emit(v int, isErr bool, msg string, f gobgplog.Fields) {
	kv := make([]any, 0, 2*len(f))
	var peer netip.Addr
	var reason string
	for _, k := range slices.Sorted(mapKeys(f)) {
		key := k
		lk := strings.ToLower(k)
		switch {
		case strings.Contains(lk, "password"):
			continue // never logged
		case k == "Key":
			key = "peer"
			if s, ok := f[k].(string); ok {
				if a, err := netip.ParseAddr(s); err == nil {
					peer = a.Unmap()
				}
			}
		case k == "Reason" || k == "Error" || k == "Err":
			reason = fmt.Sprint(f[k])
		}
		kv = append(kv, lowerFirst(key), f[k])
	}
	if l.noteDown != nil && peer.IsValid() && recordable(msg, isErr, v, reason) {
		text := msg
		if reason != "" {
			text += ": " + reason
		}
		l.noteDown(peer, text)
	}
	if isErr {
		l.log.Error(nil, msg, kv...)
		return
	}
	l.log.V(v).Info(msg, kv...)
}

// msgConnectFailed is the server's message when a connection attempt fails.
const msgConnectFailed = "failed to connect"

// recordable picks the messages that explain a session being down.
func recordable(msg string, isErr bool, v int, reason string) bool {
	switch {
	case isErr, v == 0:
		return true
	case msg == "Peer Down", msg == msgConnectFailed:
		return true
	}
	return false
}

func mapKeys(f gobgplog.Fields) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range f {
			if !yield(k) {
				return
			}
		}
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

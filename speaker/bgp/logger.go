package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/go-logr/logr"
)

// logAdapter is the embedded server's slog handler: it sends the server's
// logs to logr and notes why sessions fail, for PeerState.LastError.
type logAdapter struct {
	log      logr.Logger
	noteDown func(netip.Addr, string)
	// attrs were added by the server's logger.With (the peer's "Key").
	attrs []slog.Attr
}

var _ slog.Handler = (*logAdapter)(nil)

// newServerLogger wraps the adapter for the server's LoggerOption.
func newServerLogger(log logr.Logger, noteDown func(netip.Addr, string)) *slog.Logger {
	return slog.New(&logAdapter{log: log, noteDown: noteDown})
}

// Enabled is always true so the server hands over the debug-level connect
// failures we record; logr's verbosity filters what is printed.
func (l *logAdapter) Enabled(context.Context, slog.Level) bool { return true }

func (l *logAdapter) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *l
	c.attrs = append(slices.Clip(l.attrs), attrs...)
	return &c
}

// WithGroup is flattened: the server does not use groups for anything we
// read.
func (l *logAdapter) WithGroup(string) slog.Handler { return l }

func (l *logAdapter) Handle(_ context.Context, r slog.Record) error {
	attrs := slices.Clone(l.attrs)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	v, isErr := 2, false
	switch {
	case r.Level >= slog.LevelError:
		v, isErr = 0, true
	case r.Level >= slog.LevelWarn:
		v = 0
	case r.Level >= slog.LevelInfo:
		v = 1
	}
	l.emit(v, isErr, r.Message, attrs)
	return nil
}

func (l *logAdapter) emit(v int, isErr bool, msg string, attrs []slog.Attr) {
	kv := make([]any, 0, 2*len(attrs))
	var peer netip.Addr
	var reason string
	for _, a := range attrs {
		key := a.Key
		lk := strings.ToLower(key)
		switch {
		case strings.Contains(lk, "password"):
			continue // never logged
		case key == "Key":
			key = "peer"
			if a, err := netip.ParseAddr(a.Value.String()); err == nil {
				peer = a.Unmap()
			}
		case key == "Reason" || key == "Error" || key == "Err":
			reason = a.Value.String()
		}
		kv = append(kv, lowerFirst(key), a.Value.Any())
	}
	if l.noteDown != nil && peer.IsValid() && recordable(msg, isErr, v) {
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
func recordable(msg string, isErr bool, v int) bool {
	switch {
	case isErr, v == 0:
		return true
	case msg == "Peer Down", msg == msgConnectFailed:
		return true
	}
	return false
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

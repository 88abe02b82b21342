package membership

import (
	"bytes"
	"log"

	"github.com/go-logr/logr"
)

// newStdLogger adapts memberlist's standard-library logger, whose lines look
// like "[WARN] memberlist: text", to logr. Errors and warnings stay visible
// at the default verbosity; memberlist's chatty INFO and DEBUG lines go to
// V(1) and V(2).
func newStdLogger(l logr.Logger) *log.Logger {
	return log.New(logWriter{l.WithName("memberlist")}, "", 0)
}

type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := ""
	if bytes.HasPrefix(line, []byte("[")) {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			level = string(line[1:end])
			line = bytes.TrimSpace(line[end+1:])
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	// Messages stay constant so they can be searched for; memberlist's own
	// text goes into a key.
	detail := string(line)
	switch level {
	case "ERR", "ERROR":
		w.log.Error(nil, "memberlist reported an error", "detail", detail)
	case "WARN":
		w.log.Info("memberlist reported a warning", "detail", detail)
	case "INFO":
		w.log.V(1).Info("memberlist reported", "detail", detail)
	default:
		w.log.V(2).Info("memberlist debug", "detail", detail)
	}
	return len(p), nil
}

package forwarder

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A sysctl the speaker cannot write (a container's read-only /proc/sys)
// fails with the sysctl's name, its value and the two ways out.
func TestSysctlErrorNamesTheFix(t *testing.T) {
	err := sysctlError("/proc/sys/net/ipv4/vs/conntrack", "1", &fs.PathError{Op: "open", Path: "/proc/sys/net/ipv4/vs/conntrack", Err: unix.EROFS})
	if !errors.Is(err, ErrNodeSysctl) || !errors.Is(err, unix.EROFS) {
		t.Errorf("sysctlError() = %v, want it to wrap ErrNodeSysctl and EROFS", err)
	}
	for _, want := range []string{"net.ipv4.vs.conntrack=1", "sysctl -w net.ipv4.vs.conntrack=1", "--forwarder=nftables", "docs/install.md"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("sysctlError() = %q, want it to say %q", err, want)
		}
	}
}

package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, the same place `ip netns` uses,
// so `ip netns exec` and `ip netns list` see the lab.
const netnsDir = "/run/netns"

// sysctl is one setting written below /proc/sys; the key uses dots.
type sysctl struct{ key, value string }

// prepareNetnsDir makes /run/netns a shared mount point exactly as
// `ip netns add` does. Without it, a later `ip netns add` by anyone would
// mount over the directory and hide the lab's namespaces from other mount
// namespaces.
func prepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	// Not a mount point yet: bind it onto itself first.
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// onThread runs fn on a fresh locked OS thread and restores the thread's
// namespace afterwards. A thread that cannot be restored stays locked, so the
// runtime throws it away instead of reusing it for unrelated goroutines.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current namespace: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// createNamespace creates the named namespace, applies sysctls and brings lo
// up inside it (these need a thread that lives in the namespace), and returns
// a handle to it.
func createNamespace(name string, sysctls []sysctl) (netns.NsHandle, error) {
	var h netns.NsHandle = -1
	err := onThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
		// The thread now lives in the new namespace: /proc/sys/net and
		// netlink calls below act on it.
		if err := writeSysctls(sysctls); err != nil {
			return fmt.Errorf("namespace %s: %w", name, err)
		}
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("namespace %s: find lo: %w", name, err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("namespace %s: set lo up: %w", name, err)
		}
		return nil
	})
	if err != nil && h >= 0 {
		h.Close()
		h = -1
	}
	return h, err
}

// inNamespace runs fn with the calling thread switched into ns.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter namespace: %w", err)
		}
		return fn()
	})
}

func writeSysctls(sysctls []sysctl) error {
	for _, s := range sysctls {
		path := filepath.Join("/proc/sys", strings.ReplaceAll(s.key, ".", "/"))
		if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", s.key, s.value, err)
		}
	}
	return nil
}

// namespaceInode identifies a named namespace so processes living in it can
// be found through /proc/<pid>/ns/net.
func namespaceInode(name string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, name), &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// pidsInNamespaces lists processes whose network namespace is one of the
// given inodes (what `ip netns pids` does, for several namespaces at once).
func pidsInNamespaces(inodes map[uint64]bool) []int {
	if len(inodes) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if inodes[st.Ino] {
			pids = append(pids, pid)
		}
	}
	return pids
}

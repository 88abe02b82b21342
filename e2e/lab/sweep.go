package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A run's prefix is "ilb<pid><letter>-": the pid says whether the run that
// made a namespace is still alive, the letter tells apart several labs of
// one process. The longest root-namespace link, "ilb4194304z-lab", still fits
// the kernel's 15-byte interface names.
var (
	prefixPattern = regexp.MustCompile(`^ilb([0-9]+)[a-z]-`)
	labSequence   atomic.Uint32
)

func newPrefix() string {
	n := labSequence.Add(1) - 1
	return fmt.Sprintf("ilb%d%c-", os.Getpid(), 'a'+rune(n%26))
}

// Sweep removes everything named with prefix: processes living in its
// namespaces, the namespaces, and root-namespace links. It is what Close does
// for a lab that is gone, and is safe to call when nothing is left.
func Sweep(prefix string) error {
	if prefix == "" {
		return errors.New("sweep: empty prefix")
	}
	var namespaces []string
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sweep %s: list namespaces: %w", prefix, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			namespaces = append(namespaces, e.Name())
		}
	}
	var links []string
	all, err := linkList()
	if err != nil {
		return fmt.Errorf("sweep %s: list links: %w", prefix, err)
	}
	for _, l := range all {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			links = append(links, l.Attrs().Name)
		}
	}
	return removeAll(namespaces, links)
}

// SweepStale removes the leftovers of labs whose process is gone (killed with
// SIGKILL, crashed before its cleanup ran). Labs of live processes are left
// alone, so it is safe while other runs are up.
func SweepStale() error {
	dead := map[string]bool{}
	consider := func(name string) {
		m := prefixPattern.FindStringSubmatch(name)
		if m == nil {
			return
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || processAlive(pid) {
			return
		}
		dead[m[0]] = true
	}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		consider(e.Name())
	}
	links, err := linkList()
	if err != nil {
		return fmt.Errorf("sweep stale labs: list links: %w", err)
	}
	for _, l := range links {
		consider(l.Attrs().Name)
	}
	var errs []error
	for prefix := range dead {
		errs = append(errs, Sweep(prefix))
	}
	return errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeAll kills the processes in the namespaces, deletes root-namespace
// links, then the namespaces. Links go first and explicitly: a namespace is
// destroyed asynchronously by the kernel, and the caller must be able to rely
// on nothing being left when this returns.
func removeAll(namespaces, links []string) error {
	var errs []error
	inodes := map[uint64]bool{}
	for _, ns := range namespaces {
		if ino, ok := namespaceInode(ns); ok {
			inodes[ino] = true
		}
	}
	if err := killAll(pidsInNamespaces(inodes), 5*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, name := range links {
		l, err := netlink.LinkByName(name)
		if err != nil {
			var notFound netlink.LinkNotFoundError
			if !errors.As(err, &notFound) {
				errs = append(errs, fmt.Errorf("find link %s: %w", name, err))
			}
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
		}
	}
	for _, ns := range namespaces {
		if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

// killAll asks processes to stop, then kills those still there after grace.
func killAll(pids []int, grace time.Duration) error {
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !anyAlive(pids) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if !anyAlive(pids) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("processes %v still alive after SIGKILL", pids)
}

// anyAlive reports whether any pid still runs. Zombies count as gone: they
// hold no namespace and their parent reaps them.
func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if !processAlive(pid) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The state follows the parenthesised command name.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == 'Z' {
			continue
		}
		return true
	}
	return false
}

// hostLock serialises labs that own the host port: the root namespace can
// carry 172.25.254.254/24 on one link only without ambiguous routes. The lock
// is an flock, so the kernel releases it when its holder dies.
const lockPath = "/run/ironlb-lab.lock"

// HostLock is the host lock held outside a lab: a test that compares the
// root namespace before, during and after its lab takes it first, so no
// other lab comes or goes between its snapshots, and passes it in
// Config.HostLock.
type HostLock struct{ f *os.File }

// LockHost waits (bounded by ctx) until no lab of this machine is up and
// takes the host lock; waiting, if set, is called once if it has to wait.
func LockHost(ctx context.Context, waiting func()) (*HostLock, error) {
	f, err := acquireHostLock(ctx, waiting)
	if err != nil {
		return nil, err
	}
	return &HostLock{f: f}, nil
}

// Release lets other labs take the host address; it is safe to call twice.
func (h *HostLock) Release() {
	if h.f != nil {
		h.f.Close()
		h.f = nil
	}
}

func acquireHostLock(ctx context.Context, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", lockPath, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another lab to release %s: %w", lockPath, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// linkList lists the root namespace's links, again when the kernel says
// the list changed while being read (other labs' links come and go).
func linkList() ([]netlink.Link, error) {
	for i := 1; ; i++ {
		links, err := netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 5 {
			return links, err
		}
	}
}

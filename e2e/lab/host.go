package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Host is one machine of the lab: a named network namespace with a port on
// the segment, or the root namespace for the lab's Host.
type Host struct {
	// Name is the short name: "router", "client", "node1", "pod1", "host".
	Name string
	// Namespace is the network namespace's name for `ip netns exec`;
	// empty for the root namespace.
	Namespace string
	// Iface is the host's link on its network: eth0 in a namespace, the
	// prefixed veth in the root namespace.
	Iface string
	// IPv4 and IPv6 are the host's addresses on that link (IPv6 is invalid
	// for pods, which are IPv4 only).
	IPv4, IPv6 netip.Addr

	lab *Lab
}

// Command returns a command that runs in the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if h.Namespace == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	// `ip netns exec` also remounts /sys for the namespace, so tools that
	// read interfaces from sysfs see the host's links.
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace, name}, args...)...)
}

// Exec runs a command in the host's namespace and returns its combined
// output; the error includes the output so a failed step explains itself.
func (h *Host) Exec(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ProcessSpec describes a long-running process.
type ProcessSpec struct {
	// Label names the log file and the process in Logs; default: the base
	// name of Path.
	Label string
	Path  string
	Args  []string
	// Env is added to the lab process's environment.
	Env []string
}

// Process is a long-running program started in a host. Its output goes to
// LogPath.
type Process struct {
	Host    *Host
	Label   string
	LogPath string
	cmdline string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	once sync.Once
}

// Start runs a long-running program in the host, with stdout and stderr in a
// log file of the lab. The lab stops it on Close.
func (h *Host) Start(name string, args ...string) (*Process, error) {
	return h.StartProcess(ProcessSpec{Path: name, Args: args})
}

// StartProcess is Start with a label and extra environment.
func (h *Host) StartProcess(spec ProcessSpec) (*Process, error) {
	l := h.lab
	label := spec.Label
	if label == "" {
		label = filepath.Base(spec.Path)
	}
	logPath, err := l.newLogFile(h.Name + "-" + label)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s on %s: open log: %w", label, h.Name, err)
	}
	defer logf.Close()

	cmd := h.Command(context.Background(), spec.Path, spec.Args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: Ctrl-C on the terminal reaches the lab,
		// which then stops its processes in order, instead of racing it.
		Setpgid: true,
		// If the lab process dies without cleaning up, the child goes too.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &Process{
		Host: h, Label: label, LogPath: logPath,
		cmdline: strings.TrimSpace(spec.Path + " " + strings.Join(spec.Args, " ")),
		cmd:     cmd, done: make(chan struct{}),
	}
	if err := l.track(p); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		l.untrack(p)
		return nil, fmt.Errorf("start %s on %s: %w", label, h.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit error once Done is closed.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Pid is the process id (`ip netns exec` replaces itself with the program).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log returns what the process has written so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// Stop sends SIGTERM to the process group, waits up to grace, then kills it.
// Calling it again returns the same result.
func (p *Process) Stop(grace time.Duration) error {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// Anything left in its group (children of the program) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	<-p.done
	var exit *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exit) {
		return fmt.Errorf("stop %s on %s: %w", p.Label, p.Host.Name, p.err)
	}
	return nil
}

// Kill stops the process at once with SIGKILL, as a crash or power loss
// would.
func (p *Process) Kill() {
	p.once.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

func (p *Process) String() string {
	state := "running"
	select {
	case <-p.done:
		if p.err != nil {
			state = "exited: " + p.err.Error()
		} else {
			state = "exited: status 0"
		}
	default:
	}
	return fmt.Sprintf("%s on %s (%s) [%s]", p.Label, p.Host.Name, p.cmdline, state)
}

// Dial connects from inside the host's namespace. The socket belongs to the
// namespace for its whole life, so the connection can be used anywhere.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s %s: %w", h.Name, network, address, err)
	}
	return c, nil
}

// Listen opens a listener inside the host's namespace.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s %s: %w", h.Name, network, address, err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket inside the host's namespace.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s %s: %w", h.Name, network, address, err)
	}
	return pc, nil
}

// Do runs fn on an OS thread switched into the host's namespace, for code
// that needs the namespace itself (raw sockets, netlink, /proc/sys/net).
// Sockets fn opens stay in the namespace. The thread is restored afterwards,
// or discarded if it cannot be.
func (h *Host) Do(fn func() error) error {
	if h.Namespace == "" {
		return fn()
	}
	ns, err := netns.GetFromName(h.Namespace)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", h.Namespace, err)
	}
	defer ns.Close()
	return inNamespace(ns, fn)
}

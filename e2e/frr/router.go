package frr

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Daemons is where Debian's frr package installs zebra and bgpd.
const Daemons = "/usr/lib/frr"

// startLimit bounds how long a daemon may take to come up.
const startLimit = time.Minute

// Installed returns nil when FRR's daemons and vtysh are present, else why
// not.
func Installed() error {
	for _, bin := range []string{"zebra", "bgpd", "bfdd"} {
		if _, err := os.Stat(filepath.Join(Daemons, bin)); err != nil {
			return fmt.Errorf("FRR not installed (%v): apt-get install -y frr", err)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		return fmt.Errorf("FRR's vtysh not installed: %v", err)
	}
	return nil
}

// Require ends a test that needs FRR when it is not installed: a failure
// under CI (CI=true), where .ci/run installs it, and a skip naming the
// install step on a developer's machine.
func Require(t testing.TB) {
	t.Helper()
	err := Installed()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: FRR must be installed)", err)
	}
	t.Skipf("%v; under CI=true this fails instead", err)
}

// Router is zebra and bgpd, and bfdd when configured, running in one
// network namespace.
type Router struct {
	Namespace string
	Dir       string // configuration, sockets and logs

	daemons []*daemon
}

type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *os.File
}

// Start runs zebra and bgpd in namespace ns until the test ends, with the
// bgpd.conf that bgpdConf returns for the router's directory (for its log
// file line), and bfdd with bfddConf's bfdd.conf when that is given and not
// nil (Config.BFDD). It returns once bgpd answers vtysh. The daemons' output
// and logs are shown when the test fails.
func Start(t testing.TB, ns string, bgpdConf func(dir string) string, bfddConf ...func(dir string) string) *Router {
	t.Helper()
	r, err := Launch(ns, bgpdConf, bfddConf...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logs := r.Close()
		if t.Failed() {
			t.Log(logs)
		}
	})
	return r
}

// Launch is Start for programs other than tests: the caller must Close the
// router.
func Launch(ns string, bgpdConf func(dir string) string, bfddConf ...func(dir string) string) (_ *Router, err error) {
	// FRR drops to user frr, which cannot enter a private temporary parent.
	dir, err := os.MkdirTemp("", "ironlb-frr-")
	if err != nil {
		return nil, fmt.Errorf("create FRR dir: %w", err)
	}
	r := &Router{Namespace: ns, Dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, r.Close())
		}
	}()
	if out, err := exec.Command("chown", "frr:frr", dir).CombinedOutput(); err != nil {
		return r, fmt.Errorf("chown %s: %v: %s", dir, err, out)
	}
	for name, conf := range map[string]string{"zebra.conf": "hostname lab-router\n", "bgpd.conf": bgpdConf(dir), "vtysh.conf": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o644); err != nil {
			return r, fmt.Errorf("write %s: %w", name, err)
		}
	}
	zserv := filepath.Join(dir, "zserv.api")
	if err := r.daemon("zebra", "-z", zserv, "--vty_socket", dir, "-i", filepath.Join(dir, "zebra.pid"), "-f", filepath.Join(dir, "zebra.conf")); err != nil {
		return r, err
	}
	if err := waitFor("zebra's socket", func() error { _, err := os.Stat(zserv); return err }); err != nil {
		return r, err
	}
	// bfdd before bgpd, so bgpd's BFD registrations find it.
	if len(bfddConf) > 0 && bfddConf[0] != nil {
		conf := filepath.Join(dir, "bfdd.conf")
		if err := os.WriteFile(conf, []byte(bfddConf[0](dir)), 0o644); err != nil {
			return r, fmt.Errorf("write bfdd.conf: %w", err)
		}
		if err := r.daemon("bfdd", "-z", zserv, "--vty_socket", dir, "-i", filepath.Join(dir, "bfdd.pid"), "-f", conf, "--bfdctl", filepath.Join(dir, "bfdd.sock")); err != nil {
			return r, err
		}
	}
	if err := r.daemon("bgpd", "-z", zserv, "--vty_socket", dir, "-i", filepath.Join(dir, "bgpd.pid"), "-f", filepath.Join(dir, "bgpd.conf"), "-p", "179"); err != nil {
		return r, err
	}
	err = waitFor("bgpd answering vtysh", func() error {
		if out, err := r.Vtysh("show bgp summary json"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return r, err
}

// waitFor polls ready until it returns nil or startLimit passes.
func waitFor(what string, ready func() error) error {
	deadline := time.Now().Add(startLimit)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %v: %w", what, startLimit, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// daemon runs an FRR daemon in the foreground in the router's namespace
// until Close.
func (r *Router) daemon(name string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.Namespace, filepath.Join(Daemons, name)}, args...)...)
	out, err := os.Create(filepath.Join(r.Dir, name+".out"))
	if err != nil {
		return fmt.Errorf("create %s output: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	r.daemons = append(r.daemons, &daemon{name: name, cmd: cmd, out: out})
	return nil
}

// Close kills the daemons, removes the router's directory and returns the
// daemons' output and logs.
func (r *Router) Close() string {
	var logs strings.Builder
	for _, d := range slices.Backward(r.daemons) {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.out.Close()
		o, _ := os.ReadFile(d.out.Name())
		b, _ := os.ReadFile(filepath.Join(r.Dir, d.name+".log"))
		fmt.Fprintf(&logs, "===== %s output =====\n%s%s", d.name, o, b)
	}
	r.daemons = nil
	_ = os.RemoveAll(r.Dir)
	return logs.String()
}

// Vtysh runs one vtysh command against this router.
func (r *Router) Vtysh(command string) ([]byte, error) { return Vtysh(r.Namespace, r.Dir, command) }

// NextHops reads the router's RIB for one prefix (see the package function).
func (r *Router) NextHops(pfx netip.Prefix) ([]string, error) {
	return NextHops(r.Namespace, r.Dir, pfx)
}

// BGPPaths reads the router's BGP table for one prefix (see the package
// function).
func (r *Router) BGPPaths(pfx netip.Prefix) ([]Path, error) {
	return BGPPaths(r.Namespace, r.Dir, pfx)
}

// BFDPeers reads bfdd's sessions (see the package function).
func (r *Router) BFDPeers() (map[string]string, error) { return BFDPeers(r.Namespace, r.Dir) }

// SessionStates reads bgpd's neighbours (see the package function).
func (r *Router) SessionStates() (map[string]string, error) {
	return SessionStates(r.Namespace, r.Dir)
}

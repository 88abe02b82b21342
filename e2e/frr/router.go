package frr

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Daemons is where Debian's frr package installs zebra and bgpd.
const Daemons = "/usr/lib/frr"

// startLimit bounds how long a daemon may take to come up.
const startLimit = time.Minute

// Installed returns nil when FRR's daemons and vtysh are present, else why
// not, for a test to skip with.
func Installed() error {
	for _, bin := range []string{"zebra", "bgpd"} {
		if _, err := os.Stat(filepath.Join(Daemons, bin)); err != nil {
			return fmt.Errorf("FRR not installed (%v): apt-get install -y frr", err)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		return fmt.Errorf("FRR's vtysh not installed: %v", err)
	}
	return nil
}

// Router is zebra and bgpd running in one network namespace.
type Router struct {
	Namespace string
	Dir       string // configuration, sockets and logs
}

// Start runs zebra and bgpd in namespace ns until the test ends, with the
// bgpd.conf that bgpdConf returns for the router's directory (for its log
// file line). It returns once bgpd answers vtysh.
func Start(t testing.TB, ns string, bgpdConf func(dir string) string) *Router {
	t.Helper()
	// FRR drops to user frr, which cannot enter t.TempDir's private parent.
	dir, err := os.MkdirTemp("", "ironlb-frr-")
	if err != nil {
		t.Fatalf("create FRR dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if out, err := exec.Command("chown", "frr:frr", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}
	r := &Router{Namespace: ns, Dir: dir}
	for name, conf := range map[string]string{"zebra.conf": "hostname lab-router\n", "bgpd.conf": bgpdConf(dir), "vtysh.conf": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf), 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	zserv := filepath.Join(dir, "zserv.api")
	r.daemon(t, "zebra", "-z", zserv, "--vty_socket", dir, "-i", filepath.Join(dir, "zebra.pid"), "-f", filepath.Join(dir, "zebra.conf"))
	r.waitFor(t, "zebra's socket", func() error { _, err := os.Stat(zserv); return err })
	r.daemon(t, "bgpd", "-z", zserv, "--vty_socket", dir, "-i", filepath.Join(dir, "bgpd.pid"), "-f", filepath.Join(dir, "bgpd.conf"), "-p", "179")
	r.waitFor(t, "bgpd answering vtysh", func() error {
		if out, err := r.Vtysh("show bgp summary json"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return r
}

// waitFor polls ready until it returns nil or startLimit passes.
func (r *Router) waitFor(t testing.TB, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(startLimit)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v: %v", what, startLimit, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// daemon runs an FRR daemon in the foreground in the router's namespace,
// killed in cleanup; its output and log are shown when the test fails.
func (r *Router) daemon(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.Namespace, filepath.Join(Daemons, name)}, args...)...)
	out, err := os.Create(filepath.Join(r.Dir, name+".out"))
	if err != nil {
		t.Fatalf("create %s output: %v", name, err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
		if t.Failed() {
			o, _ := os.ReadFile(out.Name())
			b, _ := os.ReadFile(filepath.Join(r.Dir, name+".log"))
			t.Logf("===== %s output =====\n%s%s", name, o, b)
		}
	})
}

// Vtysh runs one vtysh command against this router.
func (r *Router) Vtysh(command string) ([]byte, error) { return Vtysh(r.Namespace, r.Dir, command) }

// NextHops reads the router's RIB for one prefix (see the package function).
func (r *Router) NextHops(pfx netip.Prefix) ([]string, error) {
	return NextHops(r.Namespace, r.Dir, pfx)
}

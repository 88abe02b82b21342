package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helloProgram is the image's entrypoint in the containerd test: it tells
// who it runs as, by the image's /etc/passwd.
const helloProgram = `package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	name := "?"
	b, _ := os.ReadFile("/etc/passwd")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 3 && f[2] == strconv.Itoa(os.Getuid()) {
			name = f[0]
		}
	}
	fmt.Printf("hello uid=%d gid=%d user=%s\n", os.Getuid(), os.Getgid(), name)
}
`

// containerd is a private containerd daemon: its own root, state and socket
// under a temporary directory, no CRI plugin, stopped at the end of the test.
type containerd struct {
	dir, socket string
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{dir: dir, socket: filepath.Join(dir, "containerd.sock")}
	// The opt plugin would write to /opt/containerd; CRI would want a CNI
	// setup. Neither is needed to import and run an image.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket, c.socket+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("containerd log, last lines:\n%s", strings.Join(lines[max(0, len(lines)-20):], "\n"))
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.ctr("version")
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30s: %v", c.socket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctr runs ctr against this daemon in Kubernetes' namespace.
func (c *containerd) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestContainerdImportsAndRuns imports a two-platform image into a real
// containerd the way a node would be loaded (ctr -n k8s.io images import),
// finds it by its reference, and runs it: the entrypoint starts as the
// image's non-root user.
func TestContainerdImportsAndRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts a private containerd and runs a container with runc")
	}
	for _, cmd := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("%s not installed (.ci/run installs the containerd and runc packages): %v", cmd, err)
		}
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "hello.go")
	if err := os.WriteFile(src, []byte(helloProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(dir, "hello")
	gobuild := exec.Command("go", "build", "-trimpath", "-o", hello, src)
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("build the test entrypoint: %v\n%s", err, out)
	}
	// The other platform's binary is never run; import must take it along.
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	bins := fakeBinaries(t, "linux/"+other)
	tarFile := filepath.Join(dir, "hello-oci.tar")
	digest := build(t, "", append([]string{"-ref", "ironlb/image-test:v0.1.0-3-gabc1234", "-out", tarFile,
		"-entrypoint", "/hello", "-user", "65532", "-binary", "linux/" + runtime.GOARCH + "=" + hello}, bins...)...)

	c := startContainerd(t)
	if _, err := c.ctr("images", "import", "--all-platforms", "--snapshotter", "native", tarFile); err != nil {
		t.Fatal(err)
	}
	ls, err := c.ctr("images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	const name = "docker.io/ironlb/image-test:v0.1.0-3-gabc1234"
	var row string
	for _, l := range strings.Split(ls, "\n") {
		if strings.HasPrefix(l, name+" ") {
			row = l
		}
	}
	if !strings.Contains(row, digest) || !strings.Contains(row, "linux/amd64") || !strings.Contains(row, "linux/arm64") {
		t.Fatalf("ctr images ls: no row %s with digest %s for linux/amd64 and linux/arm64:\n%s", name, digest, ls)
	}

	out, err := c.ctr("run", "--rm", "--snapshotter", "native", name, "image-test")
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello uid=65532 gid=65532 user=nonroot"; strings.TrimSpace(out) != want {
		t.Errorf("ctr run %s printed %q, want %q", name, out, want)
	}
}

package kubenode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/e2e/cluster"
	"github.com/ironlb/ironlb/e2e/lab"
)

// TestNodeContainerd: a node's containerd runs inside the node's network
// namespace and its own mount namespace, imports an image built by
// hack/image under its reference, and everything goes away with the node:
// no mount, cgroup, link or firewall rule of it remains on the host.
func TestNodeContainerd(t *testing.T) {
	lab.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before, err := SnapshotHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pause, err := cluster.Build(ctx, dir, "github.com/ironlb/ironlb/e2e/pause", "pause")
	if err != nil {
		t.Fatal(err)
	}
	const ref = "ironlb.local/pause:test"
	images, err := BuildImages(ctx, dir, Image{Ref: ref, Binary: pause})
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewForTest(t, lab.Config{Nodes: 1, NoPods: true})
	c := &Cluster{cfg: Config{Lab: l, Pause: pause, SandboxImage: ref, Images: images}, Dir: t.TempDir()}
	n := &Node{Node: l.Nodes[0], c: c, Dir: c.Dir + "/node1", CgroupRoot: l.Prefix + "node1"}
	n.Socket = n.path("containerd.sock")
	c.Nodes = []*Node{n}
	if err := n.prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.startContainerd(ctx); err != nil {
		_ = n.stop()
		t.Fatalf("%v\n%s", err, l.Logs())
	}
	out, err := n.ctr(ctx, "images", "ls", "-q")
	if err != nil || !strings.Contains(out, ref) {
		t.Errorf("ctr images ls -q = %q, %v; want %s", out, err, ref)
	}
	if err := n.stop(); err != nil {
		t.Errorf("stop node: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("close lab: %v", err)
	}
	after, err := SnapshotHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := before.Diff(after); len(d) > 0 {
		t.Errorf("the node left state on the host:\n%s", strings.Join(d, "\n"))
	}
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ironlb/ironlb/e2e/cluster"
)

// Binaries every scenario runs, built once by TestMain.
var (
	ironlbPath  string
	backendPath string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// envtest logs through controller-runtime; the scenarios report what
	// matters themselves.
	ctrllog.SetLogger(logr.Discard())
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: not root, the lab scenarios will skip (network namespaces need root; CI runs as root)")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ironlb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if ironlbPath, err = cluster.Build(ctx, dir, "github.com/ironlb/ironlb", "ironlb"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if backendPath, err = cluster.Build(ctx, dir, "github.com/ironlb/ironlb/e2e/backend", "backend"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

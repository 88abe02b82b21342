package kubenode

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ironlb/ironlb/e2e/cluster"
)

// Image is a container image made of one static binary.
type Image struct {
	// Ref names the image as pods ask for it, e.g. ironlb.local/pause:lab.
	Ref string
	// Binary is the static program; it becomes /<base name> in the image,
	// the entrypoint.
	Binary string
}

// BuildImages writes one archive per image into dir with hack/image, the
// same tool that builds the release image, and returns their paths for
// Config.Images.
func BuildImages(ctx context.Context, dir string, images ...Image) ([]string, error) {
	tool, err := cluster.Build(ctx, dir, "github.com/ironlb/ironlb/hack/image", "image-tool")
	if err != nil {
		return nil, err
	}
	var archives []string
	for _, im := range images {
		out := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(im.Ref)+".tar")
		cmd := exec.CommandContext(ctx, tool, "-ref", im.Ref, "-out", out,
			"-binary", "linux/amd64="+im.Binary, "-entrypoint", "/"+filepath.Base(im.Binary))
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build image %s: %w: %s", im.Ref, err, b)
		}
		archives = append(archives, out)
	}
	return archives, nil
}

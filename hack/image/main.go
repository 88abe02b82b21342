// Command image builds a container image FROM scratch out of static
// binaries, without a container daemon, as one tar file that both
// `ctr images import` and `docker load` accept:
//
//	go run ./hack/image -ref ironlb/ironlb:v0.2.0 -out bin/ironlb-oci.tar \
//	    -binary linux/amd64=bin/linux-amd64/ironlb \
//	    -binary linux/arm64=bin/linux-arm64/ironlb \
//	    -entrypoint /ironlb -user 65532
//
// The image holds the binary at the entrypoint and, with -user, /etc/passwd
// and /etc/group naming that user. Several -binary flags give a
// multi-platform index. The output depends on the inputs only: file times
// and the creation time are SOURCE_DATE_EPOCH when set, else the Unix epoch.
// It prints `image REF digest sha256:...`, the digest of the index (or of the
// manifest when there is one platform).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if err := run(os.Args[1:], os.Getenv("SOURCE_DATE_EPOCH"), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string, sourceDateEpoch string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	cfg := Config{Labels: map[string]string{}}
	var out string
	fs.StringVar(&cfg.Ref, "ref", "", "image reference with its tag, e.g. ironlb/ironlb:v0.2.0")
	fs.StringVar(&out, "out", "", "tar file to write (OCI layout with Docker's manifest.json)")
	fs.StringVar(&cfg.Entrypoint, "entrypoint", "", "absolute path of the binary in the image, run as the entrypoint")
	fs.IntVar(&cfg.User, "user", 0, "numeric user and group to run as, added to /etc/passwd and /etc/group as \"nonroot\" (0: root, no /etc files)")
	fs.Func("binary", "OS/ARCH[/VARIANT]=FILE: a static binary for one platform (repeat for a multi-platform index)", func(s string) error {
		plat, file, ok := strings.Cut(s, "=")
		if !ok || file == "" {
			return fmt.Errorf("%q: want OS/ARCH=FILE", s)
		}
		p, err := v1.ParsePlatform(plat)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("%q: platform %q: want OS/ARCH[/VARIANT]", s, plat)
		}
		cfg.Binaries = append(cfg.Binaries, Binary{Platform: *p, Path: file})
		return nil
	})
	fs.Func("label", "KEY=VALUE label in the image configuration (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q: want KEY=VALUE", s)
		}
		cfg.Labels[k] = v
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.Ref == "" || out == "" || cfg.Entrypoint == "" {
		return errors.New("-ref, -out, -entrypoint and at least one -binary are required")
	}
	if len(cfg.Labels) == 0 {
		cfg.Labels = nil
	}
	created, err := creationTime(sourceDateEpoch)
	if err != nil {
		return err
	}
	cfg.Created = created

	res, err := Build(cfg, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "image %s digest %s\n", res.Ref, res.Digest)
	return nil
}

// creationTime is SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else
// the Unix epoch: never the clock.
func creationTime(sourceDateEpoch string) (time.Time, error) {
	if sourceDateEpoch == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(sourceDateEpoch, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since the Unix epoch", sourceDateEpoch)
	}
	return time.Unix(sec, 0).UTC(), nil
}

package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fakeBinaries writes one executable-looking file per platform and returns
// the -binary values for them.
func fakeBinaries(t *testing.T, platforms ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, p := range platforms {
		f := filepath.Join(dir, strings.ReplaceAll(p, "/", "-"))
		if err := os.WriteFile(f, []byte("\x7fELF binary for "+p), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-binary", p+"="+f)
	}
	return args
}

// build runs the command line and returns the digest it printed.
func build(t *testing.T, epoch string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(args, epoch, &out); err != nil {
		t.Fatalf("image %q: %v", args, err)
	}
	f := strings.Fields(out.String())
	if len(f) != 4 || f[0] != "image" || f[2] != "digest" || !strings.HasPrefix(f[3], "sha256:") {
		t.Fatalf("image %q printed %q, want \"image REF digest sha256:...\"", args, out.String())
	}
	return f[3]
}

func TestBuildIsReproducible(t *testing.T) {
	bins := fakeBinaries(t, "linux/amd64", "linux/arm64")
	dir := t.TempDir()
	common := append([]string{"-ref", "ironlb/ironlb:v0.2.0", "-entrypoint", "/ironlb", "-user", "65532"}, bins...)
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")

	da := build(t, "", append(common, "-out", a)...)
	// Later, with the binaries' times changed: nothing of that may show.
	later := time.Now().Add(time.Hour)
	for i := 1; i < len(bins); i += 2 {
		if err := os.Chtimes(bins[i][strings.Index(bins[i], "=")+1:], later, later); err != nil {
			t.Fatal(err)
		}
	}
	db := build(t, "", append(common, "-out", b)...)
	if da != db {
		t.Errorf("two builds of the same binaries: digest %s, then %s", da, db)
	}
	ta, _ := os.ReadFile(a)
	tb, _ := os.ReadFile(b)
	if !bytes.Equal(ta, tb) {
		t.Errorf("two builds of the same binaries wrote different tar files (%d and %d bytes)", len(ta), len(tb))
	}

	// One changed byte in one platform's binary changes the index digest.
	arm := bins[3][strings.Index(bins[3], "=")+1:]
	if err := os.WriteFile(arm, []byte("\x7fELF binary for linux/arm64, rebuilt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if dc := build(t, "", append(common, "-out", filepath.Join(dir, "c.tar"))...); dc == da {
		t.Errorf("changed arm64 binary: digest stayed %s", dc)
	}
	// So does another SOURCE_DATE_EPOCH: it is the image's time stamp.
	if dd := build(t, "1700000000", append(common, "-out", filepath.Join(dir, "d.tar"))...); dd == da {
		t.Errorf("SOURCE_DATE_EPOCH=1700000000: digest stayed %s", dd)
	}
}

// readLayout reads the image tar with the OCI layout reader and returns its
// index.json and the one image entry in it.
func readLayout(t *testing.T, file string) (v1.ImageIndex, v1.Descriptor) {
	t.Helper()
	lp, err := layout.FromPath(untar(t, file))
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index.json has %d entries, want 1", len(m.Manifests))
	}
	return top, m.Manifests[0]
}

// untar unpacks the image tar into a directory for the layout reader.
func untar(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// layerEntry is what the test checks of one file in an image layer.
type layerEntry struct {
	Mode     int64
	UID, GID int
	ModTime  time.Time
	Body     string
}

func layerEntries(t *testing.T, img v1.Image) map[string]layerEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want exactly one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]layerEntry{}
	tr := tar.NewReader(rc)
	var order []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name] = layerEntry{Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid, ModTime: hdr.ModTime.UTC(), Body: string(b)}
		order = append(order, hdr.Name)
	}
	if !slices.IsSorted(order) {
		t.Errorf("layer entries %q are not sorted", order)
	}
	return got
}

func TestBuildLayout(t *testing.T) {
	bins := fakeBinaries(t, "linux/amd64", "linux/arm64")
	out := filepath.Join(t.TempDir(), "ironlb-oci.tar")
	digest := build(t, "", append([]string{"-ref", "ironlb/ironlb:v0.1.0-12-gabc1234-dirty", "-out", out,
		"-entrypoint", "/ironlb", "-user", "65532", "-label", "org.opencontainers.image.version=v0.1.0-12-gabc1234-dirty"}, bins...)...)

	top, entry := readLayout(t, out)
	if entry.Digest.String() != digest || entry.MediaType != types.OCIImageIndex {
		t.Errorf("index.json entry %s %s, want the printed digest %s, an OCI index", entry.MediaType, entry.Digest, digest)
	}
	wantNames := map[string]string{
		"io.containerd.image.name":          "docker.io/ironlb/ironlb:v0.1.0-12-gabc1234-dirty",
		"org.opencontainers.image.ref.name": "v0.1.0-12-gabc1234-dirty",
	}
	if diff := cmp.Diff(wantNames, entry.Annotations); diff != "" {
		t.Errorf("index.json entry annotations (-want +got):\n%s", diff)
	}

	idx, err := top.ImageIndex(entry.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	wantFiles := func(arch string) map[string]layerEntry {
		epoch := time.Unix(0, 0).UTC()
		return map[string]layerEntry{
			"etc/":       {Mode: 0o755, ModTime: epoch},
			"etc/group":  {Mode: 0o644, ModTime: epoch, Body: "root:x:0:\nnonroot:x:65532:\n"},
			"etc/passwd": {Mode: 0o644, ModTime: epoch, Body: "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
			"ironlb":     {Mode: 0o755, ModTime: epoch, Body: "\x7fELF binary for linux/" + arch},
		}
	}
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture {
			t.Errorf("%s: configuration says %s/%s", d.Platform, cf.OS, cf.Architecture)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/ironlb"}) || cf.Config.User != "65532:65532" {
			t.Errorf("%s: entrypoint %q user %q, want [/ironlb] 65532:65532", d.Platform, cf.Config.Entrypoint, cf.Config.User)
		}
		if got := cf.Config.Labels["org.opencontainers.image.version"]; got != "v0.1.0-12-gabc1234-dirty" {
			t.Errorf("%s: version label %q", d.Platform, got)
		}
		if !cf.Created.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: created %s, want the Unix epoch", d.Platform, cf.Created.Time)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || m.Layers[0].MediaType != types.OCILayer {
			t.Errorf("%s: media types %s, %s, %s; want OCI's", d.Platform, m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
		}
		if diff := cmp.Diff(wantFiles(d.Platform.Architecture), layerEntries(t, img)); diff != "" {
			t.Errorf("%s: layer files (-want +got):\n%s", d.Platform, diff)
		}
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index platforms %q, want linux/amd64 and linux/arm64", platforms)
	}

	// Docker's classic loader reads manifest.json: the first platform,
	// tagged with the reference.
	tag, err := name.NewTag("ironlb/ironlb:v0.1.0-12-gabc1234-dirty")
	if err != nil {
		t.Fatal(err)
	}
	dimg, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	dcf, err := dimg.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if dcf.Architecture != "amd64" || dcf.Config.User != "65532:65532" {
		t.Errorf("manifest.json image: %s user %q, want amd64 user 65532:65532", dcf.Architecture, dcf.Config.User)
	}
	if diff := cmp.Diff(wantFiles("amd64"), layerEntries(t, dimg)); diff != "" {
		t.Errorf("manifest.json image layer files (-want +got):\n%s", diff)
	}
}

func TestBuildOnePlatformIsAManifest(t *testing.T) {
	out := filepath.Join(t.TempDir(), "pause.tar")
	digest := build(t, "", append([]string{"-ref", "lab/pause:v1", "-out", out, "-entrypoint", "/usr/local/bin/pause"},
		fakeBinaries(t, "linux/amd64")...)...)
	top, d := readLayout(t, out)
	if d.MediaType != types.OCIManifestSchema1 || d.Digest.String() != digest || d.Platform.String() != "linux/amd64" {
		t.Errorf("index.json entry %s %s %v, want an OCI manifest %s for linux/amd64", d.MediaType, d.Digest, d.Platform, digest)
	}
	img, err := top.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "" {
		t.Errorf("user %q, want none (root) without -user", cf.Config.User)
	}
	var files []string
	for n := range layerEntries(t, img) {
		files = append(files, n)
	}
	slices.Sort(files)
	if want := []string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/pause"}; !slices.Equal(files, want) {
		t.Errorf("layer files %q, want %q", files, want)
	}
}

func TestBuildRejects(t *testing.T) {
	bin := fakeBinaries(t, "linux/amd64")
	out := filepath.Join(t.TempDir(), "x.tar")
	for _, tc := range []struct {
		name  string
		args  []string
		epoch string
		want  string
	}{
		{"no tag", []string{"-ref", "ironlb/ironlb", "-entrypoint", "/ironlb", bin[0], bin[1]}, "", "no tag"},
		{"bad tag", []string{"-ref", "ironlb/ironlb:v1+x", "-entrypoint", "/ironlb", bin[0], bin[1]}, "", "ironlb/ironlb:v1+x"},
		{"relative entrypoint", []string{"-ref", "a/b:v1", "-entrypoint", "ironlb", bin[0], bin[1]}, "", `entrypoint "ironlb"`},
		{"platform twice", []string{"-ref", "a/b:v1", "-entrypoint", "/b", bin[0], bin[1], bin[0], bin[1]}, "", "linux/amd64 given twice"},
		{"no platform", []string{"-ref", "a/b:v1", "-entrypoint", "/b", "-binary", "amd64=" + bin[1][strings.Index(bin[1], "=")+1:]}, "", "want OS/ARCH"},
		{"missing binary", []string{"-ref", "a/b:v1", "-entrypoint", "/b", "-binary", "linux/amd64=/nonexistent/b"}, "", "/nonexistent/b"},
		{"bad epoch", []string{"-ref", "a/b:v1", "-entrypoint", "/b", bin[0], bin[1]}, "yesterday", `SOURCE_DATE_EPOCH "yesterday"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(append(tc.args, "-out", out), tc.epoch, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("image %q: error %v, want one naming %q", tc.args, err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("image %q failed but left %s", tc.args, out)
			}
		})
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the layout's index.json entry that name the image on import.
// containerd (ctr images import) names an image after
// annotationContainerdName; the OCI ref name carries the tag alone, as the
// image-layout convention and Docker's save do.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// Binary is one static executable and the platform it runs on.
type Binary struct {
	Platform v1.Platform
	Path     string // file on this machine
}

// Config describes an image FROM scratch holding one executable per platform.
type Config struct {
	// Ref names the image, with an explicit tag: "ironlb/ironlb:v0.2.0".
	Ref string
	// Binaries, one per platform. The first is also the image Docker's
	// classic loader (manifest.json) takes.
	Binaries []Binary
	// Entrypoint is where the binary lands in the image; it is run with no
	// arguments of its own.
	Entrypoint string
	// User is the numeric user (and group) the image runs as; it gets an
	// /etc/passwd and /etc/group entry named "nonroot". Zero: root, and no
	// /etc files.
	User int
	// Labels go into the image configuration of every platform.
	Labels map[string]string
	// Created is the one time stamp in the image: configuration, history and
	// every file. A fixed value (SOURCE_DATE_EPOCH or the Unix epoch) makes
	// two builds of the same binaries byte-identical.
	Created time.Time
}

// Result tells what Build wrote.
type Result struct {
	// Ref is the reference as given; ContainerdName the fully qualified name
	// containerd and Kubernetes look the image up by.
	Ref, ContainerdName string
	// Digest of the layout's top entry: the multi-platform index, or the
	// image manifest when there is one platform. It is the digest a runtime
	// reports for the image.
	Digest v1.Hash
}

// Build writes the image as one tar file at out: an OCI image layout
// (oci-layout, index.json, blobs/sha256/...) that also carries Docker's
// manifest.json, so both `ctr images import` and `docker load` accept it.
func Build(cfg Config, out string) (Result, error) {
	tag, err := parseRef(cfg.Ref)
	if err != nil {
		return Result{}, err
	}
	if len(cfg.Binaries) == 0 {
		return Result{}, errors.New("no binary given: want at least one OS/ARCH=FILE")
	}
	if !path.IsAbs(cfg.Entrypoint) || path.Clean(cfg.Entrypoint) != cfg.Entrypoint || cfg.Entrypoint == "/" {
		return Result{}, fmt.Errorf("entrypoint %q: want an absolute, clean file path such as /ironlb", cfg.Entrypoint)
	}
	if cfg.User < 0 {
		return Result{}, fmt.Errorf("user %d: want a numeric user ID, or 0 for root", cfg.User)
	}
	seen := map[string]bool{}
	for _, b := range cfg.Binaries {
		p := b.Platform.String()
		if seen[p] {
			return Result{}, fmt.Errorf("platform %s given twice", p)
		}
		seen[p] = true
	}
	res := Result{Ref: cfg.Ref, ContainerdName: containerdName(tag)}

	images := make([]v1.Image, 0, len(cfg.Binaries))
	for _, b := range cfg.Binaries {
		img, err := platformImage(cfg, b)
		if err != nil {
			return Result{}, fmt.Errorf("image for %s from %q: %w", b.Platform.String(), b.Path, err)
		}
		images = append(images, img)
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return Result{}, fmt.Errorf("directory for %q: %w", out, err)
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".image-layout-")
	if err != nil {
		return Result{}, fmt.Errorf("staging directory for %q: %w", out, err)
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return Result{}, fmt.Errorf("write image layout in %q: %w", dir, err)
	}
	names := layout.WithAnnotations(map[string]string{
		annotationContainerdName: res.ContainerdName,
		annotationRefName:        tag.TagStr(),
	})
	if len(images) == 1 {
		res.Digest, err = images[0].Digest()
		if err == nil {
			err = lp.AppendImage(images[0], names, layout.WithPlatform(cfg.Binaries[0].Platform))
		}
	} else {
		var adds []mutate.IndexAddendum
		for i, img := range images {
			p := cfg.Binaries[i].Platform
			adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		}
		idx := mutate.AppendManifests(empty.Index, adds...)
		res.Digest, err = idx.Digest()
		if err == nil {
			err = lp.AppendIndex(idx, names)
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("write image %s in %q: %w", cfg.Ref, dir, err)
	}
	if err := writeDockerManifest(dir, images[0], cfg.Ref); err != nil {
		return Result{}, err
	}
	if err := tarDir(dir, out, cfg.Created); err != nil {
		return Result{}, err
	}
	return res, nil
}

// parseRef accepts a reference with an explicit tag only: a defaulted
// "latest" would hide which build an installation runs.
func parseRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", ref, err)
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.Contains(last, ":") {
		return name.Tag{}, fmt.Errorf("image reference %q: no tag; want REPOSITORY:TAG", ref)
	}
	return tag, nil
}

// containerdName is the name containerd, and Kubernetes' image field, use for
// ref: short names are qualified with the default registry the way the
// container runtimes do ("ironlb/ironlb:v1" -> "docker.io/ironlb/ironlb:v1").
// go-containerregistry spells that registry differently, hence the mapping.
func containerdName(tag name.Tag) string {
	reg := tag.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + tag.RepositoryStr() + ":" + tag.TagStr()
}

// platformImage is the scratch image of one platform: one layer with the
// binary (and the user's /etc entries), and a configuration with nothing that
// depends on when or where it was built.
func platformImage(cfg Config, b Binary) (v1.Image, error) {
	compressed, err := layerTar(cfg, b.Path)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	created := v1.Time{Time: cfg.Created.UTC()}
	conf := &v1.ConfigFile{
		Architecture: b.Platform.Architecture,
		OS:           b.Platform.OS,
		Variant:      b.Platform.Variant,
		Created:      created,
		Config: v1.Config{
			Entrypoint: []string{cfg.Entrypoint},
			Labels:     cfg.Labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	if cfg.User > 0 {
		conf.Config.User = fmt.Sprintf("%d:%d", cfg.User, cfg.User)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, conf)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "hack/image: " + cfg.Entrypoint},
	})
}

// layerFile is one entry of the image's only layer.
type layerFile struct {
	mode int64
	body []byte // nil for a directory or the binary
	src  string // the binary's file on this machine
}

// layerTar returns the gzip-compressed layer: the parent directories, the
// binary at the entrypoint and, for a non-root user, /etc/passwd and
// /etc/group. Entries are sorted; owner root, fixed modes and times.
func layerTar(cfg Config, binary string) ([]byte, error) {
	files := map[string]layerFile{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			files[d[1:]+"/"] = layerFile{mode: 0o755}
		}
	}
	files[cfg.Entrypoint[1:]] = layerFile{mode: 0o755, src: binary}
	addParents(cfg.Entrypoint)
	if cfg.User > 0 {
		id := strconv.Itoa(cfg.User)
		// root keeps its entry so that a pod run as UID 0 (the speaker) still
		// resolves a name and home.
		files["etc/passwd"] = layerFile{mode: 0o644, body: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:" + id + ":" + id + ":nonroot:/home/nonroot:/sbin/nologin\n")}
		files["etc/group"] = layerFile{mode: 0o644, body: []byte(
			"root:x:0:\n" +
				"nonroot:x:" + id + ":\n")}
		addParents("/etc/passwd")
	}

	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f := files[n]
		hdr := &tar.Header{Name: n, Mode: f.mode, ModTime: cfg.Created}
		switch {
		case strings.HasSuffix(n, "/"):
			hdr.Typeflag = tar.TypeDir
		case f.src != "":
			if err := addFile(tw, hdr, f.src); err != nil {
				return nil, err
			}
			continue
		default:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer entry %q: %w", n, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, fmt.Errorf("layer entry %q: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// addFile streams the regular file src into tw under hdr.
func addFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("binary %q: not a regular file", src)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("layer entry %q from %q: %w", hdr.Name, src, err)
	}
	return nil
}

// dockerManifest is one entry of Docker's manifest.json, which `docker load`
// reads when it does not use the OCI index (Docker's classic image store).
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// writeDockerManifest adds manifest.json naming img, whose blobs the layout
// already holds. Docker's classic store keeps one image per tag, so it lists
// one platform only.
func writeDockerManifest(dir string, img v1.Image, ref string) error {
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	m := dockerManifest{Config: blobPath(cfgName), RepoTags: []string{ref}}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		m.Layers = append(m.Layers, blobPath(d))
	}
	b, err := json.Marshal([]dockerManifest{m})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// tarDir writes the files under dir into the tar file out, sorted, with
// fixed times, modes and owner, then renames it into place.
func tarDir(dir, out string, mtime time.Time) (err error) {
	var names []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			rel += "/"
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list image layout %q: %w", dir, err)
	}
	slices.Sort(names)

	tmp, err := os.CreateTemp(filepath.Dir(out), ".image-tar-")
	if err != nil {
		return fmt.Errorf("create %q: %w", out, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	tw := tar.NewWriter(tmp)
	for _, n := range names {
		hdr := &tar.Header{Name: n, ModTime: mtime}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("write %q: %w", out, err)
			}
			continue
		}
		hdr.Mode = 0o644
		if err := addFile(tw, hdr, filepath.Join(dir, filepath.FromSlash(n))); err != nil {
			return fmt.Errorf("write %q: %w", out, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write %q: %w", out, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %q: %w", out, err)
	}
	return os.Rename(tmp.Name(), out)
}

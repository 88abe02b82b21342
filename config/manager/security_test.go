// Package manager_test checks the security settings of the controller's
// Deployment and the speaker's DaemonSet, which docs/install.md promises.
package manager_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// podSpec reads the pod template of the one workload (Deployment or
// DaemonSet) in file, skipping the other documents.
func podSpec(t *testing.T, file, kind string) corev1.PodSpec {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range splitDocs(t, data) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Kind != kind {
			continue
		}
		switch kind {
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.UnmarshalStrict(doc, &d); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return d.Spec.Template.Spec
		case "DaemonSet":
			var d appsv1.DaemonSet
			if err := yaml.UnmarshalStrict(doc, &d); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return d.Spec.Template.Spec
		}
	}
	t.Fatalf("%s has no %s", file, kind)
	return corev1.PodSpec{}
}

// splitDocs returns the documents of a multi-document YAML file.
func splitDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, doc)
	}
}

func TestControllerPodSecurity(t *testing.T) {
	spec := podSpec(t, "controller.yaml", "Deployment")
	if got := spec.NodeSelector["kubernetes.io/os"]; got != "linux" {
		t.Errorf("nodeSelector kubernetes.io/os = %q, want linux", got)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want non-root 65532:65532 with RuntimeDefault seccomp", psc)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !cmp.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			t.Errorf("container %s securityContext = %+v, want no escalation, read-only root, every capability dropped, none added", c.Name, sc)
		}
	}
}

func TestSpeakerPodSecurity(t *testing.T) {
	spec := podSpec(t, "speaker.yaml", "DaemonSet")
	if got := spec.NodeSelector["kubernetes.io/os"]; got != "linux" {
		t.Errorf("nodeSelector kubernetes.io/os = %q, want linux", got)
	}
	if psc := spec.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want RuntimeDefault seccomp", psc)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !cmp.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s securityContext = %+v, want unprivileged, no escalation, read-only root, every capability dropped", c.Name, sc)
			continue
		}
		add := slices.Clone(sc.Capabilities.Add)
		slices.Sort(add)
		if want := []corev1.Capability{"NET_ADMIN", "NET_RAW"}; !cmp.Equal(add, want) {
			t.Errorf("container %s adds capabilities %v, want exactly %v (docs/install.md says why each)", c.Name, add, want)
		}
		// The IPVS backend needs sysctls a container cannot write.
		if !slices.Contains(c.Args, "--forwarder=nftables") {
			t.Errorf("container %s args %q, want --forwarder=nftables", c.Name, c.Args)
		}
	}
}

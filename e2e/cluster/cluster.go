// Package cluster turns a lab and a control plane into a cluster as ironlb
// sees it: Node objects for the lab's nodes, EndpointSlices for the pods (the
// lab has no kubelet and no endpoint controller, so these are written as a
// kubelet and the EndpointSlice controller would), and ironlb's processes.
// The e2e scenarios and the demo share it.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/e2e/controlplane"
	"github.com/ironlb/ironlb/e2e/lab"
)

// Namespace is where ironlb's configuration lives, as in the examples.
const Namespace = "metallb-system"

// Zone is the topology zone label of a lab node: nodes alternate between
// zone-a and zone-b, so node selectors by zone pick more than one node.
func Zone(n int) string {
	return fmt.Sprintf("zone-%c", 'a'+rune((n-1)%2))
}

// Register creates the metallb-system namespace and one Node per lab node,
// with its lab address as InternalIP and the labels a kubelet sets.
func Register(ctx context.Context, c client.Client, l *lab.Lab) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	for _, n := range l.Nodes {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: n.Name,
			Labels: map[string]string{
				"kubernetes.io/hostname":      n.Name,
				"kubernetes.io/os":            "linux",
				"topology.kubernetes.io/zone": Zone(n.Number),
			},
		}, Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}}}
		if err := c.Create(ctx, node); err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
		// Addresses and conditions are status, which Create ignores.
		node.Status = corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IPv4.String()},
				{Type: corev1.NodeInternalIP, Address: n.IPv6.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
					LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
				{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated",
					LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
			},
		}
		if err := c.Status().Update(ctx, node); err != nil {
			return fmt.Errorf("set status of node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Port is one port of an EndpointSlice.
type Port struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol
}

// WriteEndpoints writes the EndpointSlice of a Service whose backends are the
// given nodes' pods, all ready, each with its nodeName.
func WriteEndpoints(ctx context.Context, c client.Client, namespace, service string, nodes []*lab.Node, ports []Port) error {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      service + "-lab",
			Labels: map[string]string{
				discoveryv1.LabelServiceName: service,
				discoveryv1.LabelManagedBy:   "lab.e2e.ironlb.io",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: &p.Name, Port: &p.Port, Protocol: &p.Protocol})
	}
	yes := true
	for _, n := range nodes {
		zone := Zone(n.Number)
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{n.Pod.IPv4.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes},
			NodeName:   &n.Name,
			Zone:       &zone,
		})
	}
	if err := c.Create(ctx, slice); err != nil {
		return fmt.Errorf("write endpoints of %s/%s: %w", namespace, service, err)
	}
	return nil
}

// StartController runs `ironlb controller` as a process on the lab's host,
// against the control plane, the way it runs in a cluster but without leader
// election or metrics listeners.
func StartController(l *lab.Lab, env *controlplane.Env, ironlb string) (*lab.Process, error) {
	return l.Host.StartProcess(lab.ProcessSpec{
		Label: "controller",
		Path:  ironlb,
		Args: []string{"controller",
			"--kubeconfig", env.Kubeconfig,
			"--leader-elect=false",
			"--metrics-bind-address=0",
			"--health-probe-bind-address=0",
		},
	})
}

// Build compiles a main package of this module into dir and returns the
// binary's path.
func Build(ctx context.Context, dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	// Static, so the same binary runs as a lab process and in an image.
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

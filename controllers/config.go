package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/api/v1beta1"
	"github.com/ironlb/ironlb/api/v1beta2"
	"github.com/ironlb/ironlb/internal/ipam"
	"github.com/ironlb/ironlb/internal/policy"
)

// LoadResources reads every input of policy.Resolve: the metallb.io objects
// and Secrets of the configuration namespace and, with withNamespaces, all
// Namespaces (the controller needs them for pools' namespace selectors; the
// speaker does not).
func LoadResources(ctx context.Context, c client.Reader, namespace string, withNamespaces bool) (policy.Resources, error) {
	var (
		r          policy.Resources
		pools      v1beta1.IPAddressPoolList
		l2         v1beta1.L2AdvertisementList
		bgp        v1beta1.BGPAdvertisementList
		comms      v1beta1.CommunityList
		bfd        v1beta1.BFDProfileList
		peers      v1beta2.BGPPeerList
		secrets    corev1.SecretList
		namespaces corev1.NamespaceList
	)
	in := client.InNamespace(namespace)
	for _, l := range []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&pools, []client.ListOption{in}}, {&l2, []client.ListOption{in}}, {&bgp, []client.ListOption{in}},
		{&comms, []client.ListOption{in}}, {&bfd, []client.ListOption{in}}, {&peers, []client.ListOption{in}},
		{&secrets, []client.ListOption{in}}, {&namespaces, nil},
	} {
		if l.list == &namespaces && !withNamespaces {
			continue
		}
		if err := c.List(ctx, l.list, l.opts...); err != nil {
			return r, fmt.Errorf("list %T: %w", l.list, err)
		}
	}
	r.Pools, r.L2Advs, r.BGPAdvs = pools.Items, l2.Items, bgp.Items
	r.Communities, r.BFDProfiles, r.Peers = comms.Items, bfd.Items, peers.Items
	r.Namespaces = namespaces.Items
	r.Secrets = make(map[string]corev1.Secret, len(secrets.Items))
	for _, s := range secrets.Items {
		r.Secrets[s.Namespace+"/"+s.Name] = s
	}
	return r, nil
}

// CacheByObject restricts the managers' caches for the configuration kinds
// (and Secrets, and the given extra kinds) to the configuration namespace:
// both roles read only that namespace's metallb.io objects. Services,
// EndpointSlices, Nodes and Namespaces are cached whole but for their
// managedFields.
func CacheByObject(namespace string, extra ...client.Object) map[client.Object]cache.ByObject {
	in := cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}}
	out := map[client.Object]cache.ByObject{}
	for _, o := range append([]client.Object{
		&v1beta1.IPAddressPool{}, &v1beta1.L2Advertisement{}, &v1beta1.BGPAdvertisement{},
		&v1beta1.Community{}, &v1beta1.BFDProfile{}, &v1beta2.BGPPeer{}, &corev1.Secret{},
	}, extra...) {
		out[o] = in
	}
	// The cluster-wide kinds are cached without their managedFields, which
	// nothing here reads (only the configuration's are, to settle
	// conflicts) and which make up much of each cached copy: less memory,
	// and less to copy on every read.
	strip := cache.ByObject{Transform: cache.TransformStripManagedFields()}
	for _, o := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Node{}, &corev1.Namespace{}} {
		out[o] = strip
	}
	return out
}

// ipamPools is the allocator's view of the resolved pools.
func ipamPools(cfg policy.Config) []ipam.Pool {
	out := make([]ipam.Pool, 0, len(cfg.Pools))
	for _, p := range cfg.Pools {
		out = append(out, ipam.Pool{Name: p.Name, Ranges: p.Ranges, AvoidBuggyIPs: p.AvoidBuggyIPs})
	}
	return out
}

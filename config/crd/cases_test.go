package crd_test

import "strings"

// rejection is an object wrong in itself, and what the user must be told.
type rejection struct {
	name, apiVersion, kind, spec string
	want                         []string // substrings of the error: field path, bad value, reason
}

const peer = "myASN: 64512\npeerASN: 64513\npeerAddress: 10.0.0.1\n"

var rejections = []rejection{
	// IPAddressPool
	{"pool bare address", "v1beta1", "IPAddressPool", "addresses: [10.0.0.1]",
		[]string{"spec.addresses[0]", `"10.0.0.1" is neither a CIDR`}},
	{"pool garbage", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24, pool-a]",
		[]string{"spec.addresses[1]", `"pool-a" is neither a CIDR`}},
	{"pool bad octet", "v1beta1", "IPAddressPool", "addresses: [10.0.0.300/32]",
		[]string{"spec.addresses[0]", `"10.0.0.300/32" is neither a CIDR`}},
	{"pool prefix too long", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/33]",
		[]string{"spec.addresses[0]", `"10.0.0.0/33"`}},
	{"pool three-part range", "v1beta1", "IPAddressPool", "addresses: [10.0.0.1-10.0.0.2-10.0.0.3]",
		[]string{"spec.addresses[0]", `"10.0.0.1-10.0.0.2-10.0.0.3" is neither`}},
	{"pool reversed IPv4 range", "v1beta1", "IPAddressPool", "addresses: [10.0.0.20-10.0.0.10]",
		[]string{"spec.addresses[0]", `range "10.0.0.20-10.0.0.10" is reversed`}},
	{"pool reversed IPv4 range across octets", "v1beta1", "IPAddressPool", "addresses: [10.0.1.0-10.0.0.255]",
		[]string{"spec.addresses[0]", `range "10.0.1.0-10.0.0.255" is reversed`}},
	{"pool reversed IPv6 range", "v1beta1", "IPAddressPool", "addresses: [fd00:1::20-fd00:1::10]",
		[]string{"spec.addresses[0]", `range "fd00:1::20-fd00:1::10" is reversed`}},
	{"pool reversed IPv6 range high bit", "v1beta1", "IPAddressPool", "addresses: [ffff::-8000::]",
		[]string{"spec.addresses[0]", `range "ffff::-8000::" is reversed`}},
	{"pool mixed families", "v1beta1", "IPAddressPool", "addresses: [10.0.0.1-fd00::1]",
		[]string{"spec.addresses[0]", `range "10.0.0.1-fd00::1" mixes IPv4 and IPv6`}},
	{"pool IPv4 slash zero", "v1beta1", "IPAddressPool", "addresses: [0.0.0.0/0]",
		[]string{"spec.addresses[0]", `"0.0.0.0/0" is a /0 prefix`}},
	{"pool IPv6 slash zero", "v1beta1", "IPAddressPool", `addresses: [10.0.0.0/8, "::/0"]`,
		[]string{"spec.addresses[1]", `"::/0" is a /0 prefix`}},
	{"pool no addresses", "v1beta1", "IPAddressPool", "addresses: []",
		[]string{"spec.addresses", "should have at least 1 items"}},
	{"pool missing addresses", "v1beta1", "IPAddressPool", "autoAssign: true",
		[]string{"spec.addresses", "Required value"}},
	{"pool negative priority", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24]\nserviceAllocation:\n  priority: -1",
		[]string{"spec.serviceAllocation.priority", "-1"}},
	{"pool duplicate address", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24, 10.1.0.0/24, 10.0.0.0/24]",
		[]string{"spec.addresses", `"10.0.0.0/24" is listed more than once`}},
	{"pool duplicate namespace", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24]\nserviceAllocation:\n  namespaces: [web, api, web]",
		[]string{"spec.serviceAllocation.namespaces", `"web" is listed more than once`}},
	{"pool duplicate namespace selector", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24]\nserviceAllocation:\n  namespaceSelectors:\n  - matchLabels: {team: a}\n  - matchLabels: {team: b}\n  - matchLabels: {team: a}",
		[]string{"spec.serviceAllocation.namespaceSelectors", "lists the same selector twice"}},
	{"pool duplicate service selector", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24]\nserviceAllocation:\n  serviceSelectors:\n  - matchExpressions: [{key: app, operator: In, values: [a, b]}]\n  - matchExpressions: [{key: app, operator: In, values: [a, b]}]",
		[]string{"spec.serviceAllocation.serviceSelectors", "lists the same selector twice"}},
	{"pool bad namespace name", "v1beta1", "IPAddressPool", "addresses: [10.0.0.0/24]\nserviceAllocation:\n  namespaces: [Team_A]",
		[]string{"spec.serviceAllocation.namespaces[0]", `"Team_A"`}},

	// L2Advertisement
	{"l2 interface with slash", "v1beta1", "L2Advertisement", "interfaces: [eth0/1]",
		[]string{"spec.interfaces[0]", `"eth0/1"`}},
	{"l2 duplicate pool", "v1beta1", "L2Advertisement", "ipAddressPools: [a, b, a]",
		[]string{"spec.ipAddressPools", `"a" is listed more than once`}},
	{"l2 duplicate pool selector", "v1beta1", "L2Advertisement", "ipAddressPoolSelectors:\n- matchLabels: {tier: gold}\n- matchLabels: {tier: gold}",
		[]string{"spec.ipAddressPoolSelectors", "lists the same selector twice"}},
	{"l2 duplicate node selector", "v1beta1", "L2Advertisement", "nodeSelectors:\n- matchLabels: {zone: a}\n- matchLabels: {zone: a}",
		[]string{"spec.nodeSelectors", "lists the same selector twice"}},
	{"l2 duplicate service selector", "v1beta1", "L2Advertisement", "serviceSelectors:\n- matchLabels: {app: web}\n- matchLabels: {app: web}",
		[]string{"spec.serviceSelectors", "lists the same selector twice"}},
	{"l2 duplicate interface", "v1beta1", "L2Advertisement", "interfaces: [eth0, eth1, eth0]",
		[]string{"spec.interfaces", `"eth0" is listed more than once`}},
	{"l2 interface too long", "v1beta1", "L2Advertisement", "interfaces: [a-very-long-interface]",
		[]string{"spec.interfaces[0]", "may not be more than 15"}},

	// BGPAdvertisement
	{"bgpadv aggregation length over 32", "v1beta1", "BGPAdvertisement", "aggregationLength: 33",
		[]string{"spec.aggregationLength", "33", "less than or equal to 32"}},
	{"bgpadv aggregation length negative", "v1beta1", "BGPAdvertisement", "aggregationLength: -1",
		[]string{"spec.aggregationLength", "-1"}},
	{"bgpadv aggregation length v6 over 128", "v1beta1", "BGPAdvertisement", "aggregationLengthV6: 129",
		[]string{"spec.aggregationLengthV6", "129", "less than or equal to 128"}},
	{"bgpadv community part over 16 bits", "v1beta1", "BGPAdvertisement", `communities: ["65536:1"]`,
		[]string{"spec.communities[0]", `"65536:1" is not a community`}},
	{"bgpadv community three parts", "v1beta1", "BGPAdvertisement", `communities: ["no-export", "1:2:3"]`,
		[]string{"spec.communities[1]", `"1:2:3" is not a community`}},
	{"bgpadv large community two parts", "v1beta1", "BGPAdvertisement", `communities: ["large:1:2"]`,
		[]string{"spec.communities[0]", `"large:1:2" is not a community`}},
	{"bgpadv large community over 32 bits", "v1beta1", "BGPAdvertisement", `communities: ["large:4294967296:1:1"]`,
		[]string{"spec.communities[0]", `"large:4294967296:1:1" is not a community`}},
	{"bgpadv alias with space", "v1beta1", "BGPAdvertisement", `communities: ["my alias"]`,
		[]string{"spec.communities[0]", `"my alias" is not a community`}},
	{"bgpadv duplicate pool", "v1beta1", "BGPAdvertisement", "ipAddressPools: [a, a]",
		[]string{"spec.ipAddressPools", `"a" is listed more than once`}},
	{"bgpadv duplicate peer", "v1beta1", "BGPAdvertisement", "peers: [tor-1, tor-2, tor-1]",
		[]string{"spec.peers", `"tor-1" is listed more than once`}},
	{"bgpadv duplicate literal community", "v1beta1", "BGPAdvertisement", `communities: ["65000:100", "65000:100"]`,
		[]string{"spec.communities", `"65000:100" is listed more than once`}},
	{"bgpadv duplicate alias", "v1beta1", "BGPAdvertisement", `communities: ["gold", "gold"]`,
		[]string{"spec.communities", `"gold" is listed more than once`}},
	{"bgpadv duplicate pool selector", "v1beta1", "BGPAdvertisement", "ipAddressPoolSelectors:\n- matchLabels: {tier: gold}\n- matchLabels: {tier: gold}",
		[]string{"spec.ipAddressPoolSelectors", "lists the same selector twice"}},
	{"bgpadv duplicate node selector", "v1beta1", "BGPAdvertisement", "nodeSelectors:\n- matchExpressions: [{key: zone, operator: Exists}]\n- matchExpressions: [{key: zone, operator: Exists}]",
		[]string{"spec.nodeSelectors", "lists the same selector twice"}},
	{"bgpadv duplicate service selector", "v1beta1", "BGPAdvertisement", "serviceSelectors:\n- matchLabels: {app: web}\n- matchLabels: {app: web}",
		[]string{"spec.serviceSelectors", "lists the same selector twice"}},
	{"bgpadv local pref over 32 bits", "v1beta1", "BGPAdvertisement", "localPref: 4294967296",
		[]string{"spec.localPref", "4294967296"}},

	// Community
	{"community value over 16 bits", "v1beta1", "Community", "communities:\n- name: big\n  value: 65000:70000",
		[]string{"spec.communities[0].value", `"65000:70000" is not a community`}},
	{"community value is an alias", "v1beta1", "Community", "communities:\n- name: a\n  value: other",
		[]string{"spec.communities[0].value", `"other" is not a community`}},
	{"community name with colon", "v1beta1", "Community", "communities:\n- name: \"1:2\"\n  value: 1:2",
		[]string{"spec.communities[0].name", `alias name "1:2"`}},
	{"community duplicate name", "v1beta1", "Community", "communities:\n- name: a\n  value: 1:2\n- name: a\n  value: 3:4",
		[]string{"spec.communities[1]", "Duplicate value"}},

	// BFDProfile
	{"bfd receive interval too small", "v1beta1", "BFDProfile", "receiveInterval: 9",
		[]string{"spec.receiveInterval", "9", "greater than or equal to 10"}},
	{"bfd transmit interval too large", "v1beta1", "BFDProfile", "transmitInterval: 60001",
		[]string{"spec.transmitInterval", "60001", "less than or equal to 60000"}},
	{"bfd echo interval too small", "v1beta1", "BFDProfile", "echoInterval: 5",
		[]string{"spec.echoInterval", "5"}},
	{"bfd multiplier too small", "v1beta1", "BFDProfile", "detectMultiplier: 1",
		[]string{"spec.detectMultiplier", "1", "greater than or equal to 2"}},
	{"bfd multiplier too large", "v1beta1", "BFDProfile", "detectMultiplier: 256",
		[]string{"spec.detectMultiplier", "256"}},
	{"bfd ttl zero", "v1beta1", "BFDProfile", "minimumTtl: 0",
		[]string{"spec.minimumTtl", "0", "greater than or equal to 1"}},
	{"bfd ttl too large", "v1beta1", "BFDProfile", "minimumTtl: 255",
		[]string{"spec.minimumTtl", "255"}},

	// BGPPeer v1beta2
	{"peer myASN missing", "v1beta2", "BGPPeer", "peerASN: 64513\npeerAddress: 10.0.0.1",
		[]string{"spec.myASN", "Required value"}},
	{"peer myASN zero", "v1beta2", "BGPPeer", "myASN: 0\npeerASN: 64513\npeerAddress: 10.0.0.1",
		[]string{"spec.myASN", "0", "greater than or equal to 1"}},
	{"peer ASN over 32 bits", "v1beta2", "BGPPeer", "myASN: 64512\npeerASN: 4294967296\npeerAddress: 10.0.0.1",
		[]string{"spec.peerASN", "4294967296", "less than or equal to 4294967295"}},
	{"peer ASN and dynamic ASN", "v1beta2", "BGPPeer", "myASN: 64512\npeerASN: 64513\ndynamicASN: external\npeerAddress: 10.0.0.1",
		[]string{"spec.dynamicASN", "peerASN and dynamicASN (external) are mutually exclusive"}},
	{"peer no ASN", "v1beta2", "BGPPeer", "myASN: 64512\npeerAddress: 10.0.0.1",
		[]string{"spec.peerASN", "one of peerASN or dynamicASN must be set"}},
	{"peer bad dynamic ASN", "v1beta2", "BGPPeer", "myASN: 64512\ndynamicASN: both\npeerAddress: 10.0.0.1",
		[]string{"spec.dynamicASN", `"both"`}},
	{"peer address and interface", "v1beta2", "BGPPeer", "myASN: 64512\npeerASN: 64513\npeerAddress: 10.0.0.1\ninterface: eth1",
		[]string{"spec.interface", "peerAddress (10.0.0.1) and interface (eth1) are mutually exclusive"}},
	{"peer neither address nor interface", "v1beta2", "BGPPeer", "myASN: 64512\npeerASN: 64513",
		[]string{"spec.peerAddress", "one of peerAddress or interface must be set"}},
	{"peer bad address", "v1beta2", "BGPPeer", "myASN: 64512\npeerASN: 64513\npeerAddress: 10.0.0.256",
		[]string{"spec.peerAddress", `"10.0.0.256" is not an IP address`}},
	{"peer bad source address", "v1beta2", "BGPPeer", peer + "sourceAddress: node-1",
		[]string{"spec.sourceAddress", `"node-1" is not an IP address`}},
	{"peer IPv6 router ID", "v1beta2", "BGPPeer", peer + "routerID: fd00::1",
		[]string{"spec.routerID", `routerID "fd00::1" is not an IPv4 address`}},
	{"peer password and secret", "v1beta2", "BGPPeer", peer + "password: pw\npasswordSecret:\n  name: bgp",
		[]string{"spec.passwordSecret", "password and passwordSecret are mutually exclusive"}},
	{"peer hold time under 3s", "v1beta2", "BGPPeer", peer + "holdTime: 2s",
		[]string{"spec.holdTime", `holdTime "2s" must be 0 or a duration from 3s to 65535s`}},
	{"peer hold time over 16 bits", "v1beta2", "BGPPeer", peer + "holdTime: 20h",
		[]string{"spec.holdTime", `holdTime "20h"`}},
	{"peer hold time not a duration", "v1beta2", "BGPPeer", peer + "holdTime: soon",
		[]string{"spec.holdTime", `holdTime "soon"`}},
	{"peer keepalive over hold time", "v1beta2", "BGPPeer", peer + "holdTime: 90s\nkeepaliveTime: 100s",
		[]string{"spec.keepaliveTime", "keepaliveTime 100s is greater than holdTime 90s"}},
	{"peer keepalive with hold time zero", "v1beta2", "BGPPeer", peer + "holdTime: 0s\nkeepaliveTime: 30s",
		[]string{"spec.keepaliveTime", "keepaliveTime 30s is greater than holdTime 0s"}},
	{"peer keepalive not a duration", "v1beta2", "BGPPeer", peer + `keepaliveTime: "30"`,
		[]string{"spec.keepaliveTime", `keepaliveTime "30" is not a duration`}},
	{"peer connect time fraction", "v1beta2", "BGPPeer", peer + "connectTime: 1500ms",
		[]string{"spec.connectTime", `connectTime "1500ms" must be a whole number of seconds`}},
	{"peer connect time zero", "v1beta2", "BGPPeer", peer + "connectTime: 0s",
		[]string{"spec.connectTime", `connectTime "0s"`}},
	{"peer port zero", "v1beta2", "BGPPeer", peer + "peerPort: 0",
		[]string{"spec.peerPort", "0", "greater than or equal to 1"}},
	{"peer port over 16 bits", "v1beta2", "BGPPeer", peer + "peerPort: 65536",
		[]string{"spec.peerPort", "65536"}},

	{"peer duplicate node selector", "v1beta2", "BGPPeer", peer + "nodeSelectors:\n- matchLabels: {rack: r1}\n- matchLabels: {rack: r1}",
		[]string{"spec.nodeSelectors", "lists the same selector twice"}},

	// BGPPeer v1beta1
	{"v1beta1 peer ASN zero", "v1beta1", "BGPPeer", "myASN: 64512\npeerASN: 0\npeerAddress: 10.0.0.1",
		[]string{"spec.peerASN", "0", "greater than or equal to 1"}},
	{"v1beta1 peer address missing", "v1beta1", "BGPPeer", "myASN: 64512\npeerASN: 64513",
		[]string{"spec.peerAddress", "Required value"}},
	{"v1beta1 peer hold time under 3s", "v1beta1", "BGPPeer", peer + "holdTime: 1s",
		[]string{"spec.holdTime", `holdTime "1s" must be 0`}},
	{"v1beta1 peer keepalive over hold time", "v1beta1", "BGPPeer", peer + "holdTime: 9s\nkeepaliveTime: 10s",
		[]string{"spec.keepaliveTime", "keepaliveTime 10s is greater than holdTime 9s"}},
	{"v1beta1 peer duplicate node selector", "v1beta1", "BGPPeer", peer + "nodeSelectors:\n- matchLabels: {rack: r1}\n- matchLabels: {rack: r1}",
		[]string{"spec.nodeSelectors", "lists the same selector twice"}},
}

// acceptance is a valid object close to the limits of the rules.
type acceptance struct {
	name, apiVersion, kind, spec string
}

var acceptances = []acceptance{
	// With keepaliveTime alone the hold time is three keepalives, as MetalLB
	// derives it, so the 90s default must not bound it.
	{"peer keepalive without hold time", "v1beta2", "BGPPeer", peer + "keepaliveTime: 2m"},
	{"pool single-address ranges and host bits", "v1beta1", "IPAddressPool", `
addresses:
- 10.2.0.5-10.2.0.5
- 10.2.1.0 - 10.2.1.255
- 10.3.0.7/24
- 10.4.0.0/32
- 0.0.0.0-255.255.255.255`},
	{"pool IPv6 ranges", "v1beta1", "IPAddressPool", `
addresses:
- fd00:1::-fd00:1::ffff
- ::1-::2
- fd00:2::ff-fd00:2::1:0
- 2001:DB8::1-2001:db8::1
- fd00:3:0:0:0:0:0:1-fd00:3::2
- fd00:4::/64
- 8000::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`},
	{"pool priority bounds", "v1beta1", "IPAddressPool", `
addresses: [10.5.0.0/24]
serviceAllocation:
  priority: 0`},
	{"advertisement community forms", "v1beta1", "BGPAdvertisement", `
aggregationLength: 0
aggregationLengthV6: 0
localPref: 4294967295
communities: ["0:0", "65535:65535", "large:0:0:0", "large:4294967295:4294967295:4294967295", "my_alias.1"]`},
	// Lists whose entries differ, however little, are not duplicates.
	{"lists with distinct entries", "v1beta1", "BGPAdvertisement", `
ipAddressPools: [a, b]
peers: [tor-1, tor-2]
communities: ["65000:100", "65000:101", gold]
nodeSelectors:
- matchLabels: {zone: a}
- matchLabels: {zone: a, rack: r1}
- matchExpressions: [{key: zone, operator: In, values: [a, b]}]
- matchExpressions: [{key: zone, operator: NotIn, values: [a, b]}]`},
	{"bfd bounds", "v1beta1", "BFDProfile", `
receiveInterval: 10
transmitInterval: 60000
detectMultiplier: 2
echoInterval: 60000
minimumTtl: 254`},
	{"peer hold time zero and bounds", "v1beta2", "BGPPeer", `
myASN: 1
peerASN: 4294967295
peerAddress: fd00::1
holdTime: 0s
connectTime: 65535s`},
	{"peer keepalive equal to hold time", "v1beta2", "BGPPeer", `
myASN: 64512
dynamicASN: internal
peerAddress: 10.0.0.1
holdTime: 3s
keepaliveTime: 3s`},
	{"peer keepalive under the default hold time", "v1beta2", "BGPPeer", `
myASN: 64512
peerASN: 64513
peerAddress: 10.0.0.1
keepaliveTime: 1m30s
passwordSecret:
  name: ""`},
}

// manifest wraps a spec in a complete object of the metallb.io group.
func manifest(version, kind, name, namespace, spec string) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: metallb.io/" + version + "\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: " + namespace + "\nspec:\n")
	for _, line := range strings.Split(strings.Trim(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return []byte(b.String())
}

// objectName turns a test case name into an object name.
func objectName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// Package layer2 answers ARP (IPv4) and NDP (IPv6) for the service addresses
// this node owns, and announces an address the moment the node wins it.
//
// One Responder runs per interface; Responders keeps one per interface that
// has owned addresses and is driven level-triggered through Sync with the
// complete set of owned addresses.
//
// # Sockets
//
// Both protocols use AF_PACKET sockets that see frames before the kernel's
// IP stack does. NDP in particular cannot use an ICMPv6 socket: a unicast
// Neighbor Solicitation sent to the service address itself (neighbour
// unreachability detection, which every client sends once its entry goes
// stale) is routed, not delivered locally, when that address is not
// configured on the node, so an ICMPv6 socket never sees it and the client
// eventually loses the address. BPF filters keep only ARP requests and
// ICMPv6 Neighbor Solicitations. To receive solicitations sent to the
// solicited-node multicast group of an owned address, the responder also
// joins that group on the interface through an IPv6 socket, which programs
// the NIC's multicast filter and sends the MLD report that snooping switches
// need.
//
// The node never answers for an address it does not own, and forgets an
// address at once when it loses it. The kernel does not answer either:
// service addresses are not configured on the interfaces this package
// serves (keeping them off, or setting arp_ignore, is the forwarder's job).
//
// # Neighbor advertisements
//
// Answers to solicitations carry the Solicited and Override flags and the
// target link-layer address, and go to the soliciting address (to all-nodes
// with Solicited clear for duplicate address detection, as RFC 4861 7.2.4
// requires). Their source address is the interface's link-local address,
// which RFC 4861 requires ("an address assigned to the interface") and every
// host accepts as on-link; an interface without one uses the target address.
//
// # Announcements
//
// When a Responder gains an address it announces it at each offset of
// Config.Schedule (default at once, then 100 ms, 300 ms and 1 s): for IPv4
// two gratuitous ARP frames, for IPv6 an unsolicited Neighbor Advertisement
// with Override to all-nodes. Repeating covers a lost frame and a
// neighbour that was busy re-resolving. The two ARP forms exist because
// implementations differ in which they honour: the request form
// (sender = target = address, target hardware zero; RFC 5227's ARP
// Announcement) is what most hosts and switches expect, and the reply form
// is taken by devices that ignore requests not aimed at them. The reply form
// carries our hardware address as target too, without which Linux does not
// treat a reply as gratuitous and ignores it within a second of its last
// update (the neighbour "locktime").
package layer2

// Package membership tells a speaker which speakers are alive, using
// memberlist (SWIM with the Lifeguard extensions) over UDP and TCP on the
// node's address, encrypted with a key derived from the `memberlist`
// Secret.
//
// # Failure detection and its trade-off
//
// Layer-2 failover cannot be faster than the time the survivors need to
// agree that the owner of an address is dead, so the defaults here are far
// more aggressive than memberlist's LAN profile (1 s probes, 500 ms probe
// timeout, suspicion 4 x 1 s: about 5 s to declare a node dead):
//
//	ProbeInterval           100 ms  each member pings one peer per interval
//	ProbeTimeout             50 ms  wait for the direct ack before asking
//	                                IndirectChecks peers to ping on our behalf
//	IndirectChecks            2
//	SuspicionMult             2     a suspect is declared dead after
//	                                2 x ProbeInterval x max(1, log10(N))
//	SuspicionMaxTimeoutMult   2     upper bound when confirmations are awaited
//	GossipInterval           50 ms  how fast suspect/dead/leave news spreads
//
// A hard-stopped member is noticed when a survivor next probes it (on
// average half a probe cycle, up to (N-1) probe intervals for a survivor
// walking the member list), the probe fails at the end of its interval,
// and the suspicion timeout runs out: with these defaults about
// 100 + 100 + 200 ms on a small cluster, measured at a few hundred
// milliseconds on loopback (see the benchmark in this package). With
// SuspicionMult 2 memberlist expects no independent confirmations, so the
// suspicion timeout is always its minimum.
//
// The price is probe traffic and the risk of false suspicion:
//
//   - Traffic: every member sends one ping (and gets one ack) per
//     ProbeInterval whatever the cluster size, about 10 small UDP packets a
//     second each way per node, plus gossip every GossipInterval. This is
//     negligible on a LAN.
//   - False suspicion: a member that cannot answer for longer than
//     ProbeTimeout plus the suspicion timeout (a long GC or CPU-starved
//     pause, a saturated link) is declared dead and its addresses move, then
//     move back when it refutes. Memberlist's awareness score slows down
//     probing from a member that sees itself missing acks, which keeps an
//     overloaded node from accusing healthy ones. Raise ProbeInterval and
//     SuspicionMult together on loaded or lossy networks; raise
//     ProbeTimeout above the worst round-trip time of the network.
//
// A member that stops cleanly leaves before shutting down: the leave
// message spreads within one GossipInterval and the others drop it at once,
// without waiting for failure detection.
//
// Memberlist does not probe members it declared dead, so two sides of a
// partition (or a node whose link was down) would not notice on their own
// that they can talk again. Every member therefore contacts the members
// that failed or left within RejoinWindow (2 min) again every
// RejoinInterval (500 ms) with a join, a full state exchange in which each
// side refutes its own death: a partition heals within about a second of
// the network healing. After longer splits the speaker re-joins the peers
// it knows from the API with Join.
package membership

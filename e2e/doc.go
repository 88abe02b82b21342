// Package e2e holds ironlb's end-to-end scenarios: each one builds a
// network-namespace lab (package lab), starts the real control plane
// (package controlplane) and runs ironlb as processes, then checks what a user
// would check: kubectl output, ARP answers, traffic through the address.
// They need root; see README.md.
package e2e

// Command pause is the lab's sandbox image program: the process that holds a
// pod's namespaces while its containers come and go. No image can be pulled
// in the lab, so containerd's sandbox_image is built from this. It waits for
// SIGTERM or SIGINT and exits 0, and reaps children it inherits as PID 1.
//
// It is a test program and not part of the ironlb binary.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		// As PID 1 of a shared PID namespace, orphans become ours.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

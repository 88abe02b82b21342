// Command backend is the lab's stand-in for an application pod. Every
// protocol answers with the pod's name and the client address it saw, so a
// test can tell which pod served it and whether the source address survived
// the way through the load balancer:
//
//	HTTP  GET /         -> "<name> <client-ip>:<port>\n"
//	TCP   on connect    -> "<name> <client-ip>:<port>\n", then close
//	UDP   any datagram  -> "<name> <client-ip>:<port>\n"
//
// It is a test program and not part of the ironlb binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "", "name to answer with (default: the hostname)")
	httpAddr := flag.String("http", ":80", "HTTP listen address; empty disables")
	tcpAddr := flag.String("tcp", ":9000", "TCP echo-name listen address; empty disables")
	udpAddr := flag.String("udp", ":9000", "UDP echo-name listen address; empty disables")
	flag.Parse()
	if *name == "" {
		h, err := os.Hostname()
		if err != nil {
			log.Fatalf("hostname: %v", err)
		}
		*name = h
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *name, *httpAddr, *tcpAddr, *udpAddr); err != nil {
		log.Fatal(err)
	}
}

func answer(name, from string) string {
	return name + " " + from + "\n"
}

func run(ctx context.Context, name, httpAddr, tcpAddr, udpAddr string) error {
	errc := make(chan error, 3)
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()

	if httpAddr != "" {
		ln, err := net.Listen("tcp", httpAddr)
		if err != nil {
			return fmt.Errorf("listen http %s: %w", httpAddr, err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte(answer(name, r.RemoteAddr)))
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		closers = append(closers, func() { srv.Close() })
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve http: %w", err)
			}
		}()
		log.Printf("http on %s", ln.Addr())
	}

	if tcpAddr != "" {
		ln, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			return fmt.Errorf("listen tcp %s: %w", tcpAddr, err)
		}
		closers = append(closers, func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						errc <- fmt.Errorf("accept tcp: %w", err)
					}
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
					_, _ = c.Write([]byte(answer(name, c.RemoteAddr().String())))
				}()
			}
		}()
		log.Printf("tcp on %s", ln.Addr())
	}

	if udpAddr != "" {
		pc, err := net.ListenPacket("udp", udpAddr)
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", udpAddr, err)
		}
		closers = append(closers, func() { pc.Close() })
		go func() {
			buf := make([]byte, 64<<10)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						errc <- fmt.Errorf("read udp: %w", err)
					}
					return
				}
				if _, err := pc.WriteTo([]byte(answer(name, from.String())), from); err != nil {
					log.Printf("udp reply to %s: %v", from, err)
				}
			}
		}()
		log.Printf("udp on %s", pc.LocalAddr())
	}

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

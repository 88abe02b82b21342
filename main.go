// Command ironlb is a bare-metal LoadBalancer for Kubernetes.
//
//	ironlb controller   assigns external IPs from IPAddressPools to Services
//	ironlb speaker      announces Services' external IPs from each node
//	ironlb version      prints the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ironlb/ironlb/controllers"
	"github.com/ironlb/ironlb/internal/version"
	"github.com/ironlb/ironlb/speaker"
)

const usage = `ironlb is a bare-metal LoadBalancer for Kubernetes, compatible with MetalLB's
metallb.io configuration.

Usage:
  ironlb <command> [flags]

Commands:
  controller   assign external IPs from IPAddressPools to LoadBalancer Services
               and report the configuration's health (one active replica,
               leader-elected)
  speaker      announce the external IPs from this node (layer 2: answer ARP/NDP
               for the addresses this node owns; one per node)
  version      print the version and exit

Run 'ironlb <command> --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintf(stdout, "ironlb %s\n", version.String())
		return 0
	case "controller":
		return runCommand(stderr, "controller", "Assign external IPs from IPAddressPools to LoadBalancer Services.", args[1:], controllerCommand)
	case "speaker":
		return runCommand(stderr, "speaker", "Announce LoadBalancer Services' external IPs from this node.", args[1:], speakerCommand)
	default:
		fmt.Fprintf(stderr, "ironlb: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// runCommand parses a subcommand's flags and runs it; errors are printed
// once, here.
func runCommand(stderr io.Writer, name, summary string, args []string, command func(*flag.FlagSet, []string) (func() error, error)) int {
	fs := flag.NewFlagSet("ironlb "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage:\n  ironlb %s [flags]\n\nFlags:\n", summary, name)
		fs.PrintDefaults()
	}
	runFn, err := command(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ironlb %s: %v\n", name, err)
		return 2
	}
	if err := runFn(); err != nil {
		fmt.Fprintf(stderr, "ironlb %s: %v\n", name, err)
		return 1
	}
	return 0
}

func controllerCommand(fs *flag.FlagSet, args []string) (func() error, error) {
	var opts controllers.Options
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return func() error { return controllers.Run(opts) }, nil
}

func speakerCommand(fs *flag.FlagSet, args []string) (func() error, error) {
	var opts speaker.Options
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return func() error { return speaker.Run(opts) }, nil
}

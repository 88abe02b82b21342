// Package version carries the build's version, set at link time with
// -ldflags "-X github.com/ironlb/ironlb/internal/version.Version=v0.1.0".
package version

import "runtime/debug"

// Version is overridden at link time; otherwise the module version is used.
var Version = ""

// String returns the version of this build.
func String() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}

package forwarder

import (
	"errors"
	"fmt"
)

// Mode is the --forwarder setting.
type Mode string

// Modes of the forwarder.
const (
	ModeAuto     Mode = "auto"
	ModeIPVS     Mode = "ipvs"
	ModeNFTables Mode = "nftables"
	ModeOff      Mode = "off"
)

// Errors from Resolve.
var (
	ErrUnknownMode     = errors.New("unknown forwarder mode")
	ErrIPVSUnavailable = errors.New("IPVS unavailable")
)

// Resolve turns the configured mode into the backend to run (never
// ModeAuto) and the reason, for the log and the metric. ipvsAvailable is
// Available in production.
func Resolve(mode Mode, ipvsAvailable func() (bool, string)) (Mode, string, error) {
	switch mode {
	case ModeOff:
		return ModeOff, "forwarder disabled by configuration", nil
	case ModeNFTables:
		return ModeNFTables, "nftables chosen by configuration", nil
	case ModeIPVS:
		if ok, why := ipvsAvailable(); !ok {
			return "", why, fmt.Errorf("forwarder %q: %w: %s", mode, ErrIPVSUnavailable, why)
		}
		return ModeIPVS, "IPVS chosen by configuration", nil
	case ModeAuto, "":
		if ok, why := ipvsAvailable(); ok {
			return ModeIPVS, "auto: " + why, nil
		} else {
			return ModeNFTables, "auto: " + why + "; using nftables", nil
		}
	default:
		return "", "", fmt.Errorf("%w %q (want auto, ipvs, nftables or off)", ErrUnknownMode, mode)
	}
}

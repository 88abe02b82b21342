package forwarder

import (
	"errors"
	"testing"
)

func TestResolve(t *testing.T) {
	with := func() (bool, string) { return true, "ip_vs is loaded" }
	without := func() (bool, string) { return false, "no ip_vs" }
	tests := []struct {
		name      string
		mode      Mode
		available func() (bool, string)
		want      Mode
		wantErr   error
	}{
		{name: "auto with IPVS", mode: ModeAuto, available: with, want: ModeIPVS},
		{name: "auto without IPVS", mode: ModeAuto, available: without, want: ModeNFTables},
		{name: "empty is auto", mode: "", available: without, want: ModeNFTables},
		{name: "ipvs demanded and present", mode: ModeIPVS, available: with, want: ModeIPVS},
		{name: "ipvs demanded but missing", mode: ModeIPVS, available: without, wantErr: ErrIPVSUnavailable},
		{name: "nftables even with IPVS", mode: ModeNFTables, available: with, want: ModeNFTables},
		{name: "off", mode: ModeOff, available: with, want: ModeOff},
		{name: "typo", mode: "ipvs2", available: with, wantErr: ErrUnknownMode},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := Resolve(tc.mode, tc.available)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Resolve(%q) error = %v, want %v", tc.mode, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Resolve(%q) = %q, want %q", tc.mode, got, tc.want)
			}
			if err == nil && reason == "" {
				t.Errorf("Resolve(%q) gave no reason", tc.mode)
			}
		})
	}
}

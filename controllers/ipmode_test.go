package controllers_test

import (
	"flag"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/controllers"
)

// --ip-mode defaults to Proxy (the speakers' forwarder carries the
// traffic) and accepts VIP for speakers running with --forwarder=off.
func TestIPModeFlag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    corev1.LoadBalancerIPMode
		wantErr bool
	}{
		{name: "default", want: corev1.LoadBalancerIPModeProxy},
		{name: "VIP", args: []string{"--ip-mode=VIP"}, want: corev1.LoadBalancerIPModeVIP},
		{name: "Proxy", args: []string{"--ip-mode=Proxy"}, want: corev1.LoadBalancerIPModeProxy},
		{name: "unknown", args: []string{"--ip-mode=vip"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o controllers.Options
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o.BindFlags(fs)
			err := fs.Parse(tc.args)
			// The flag package keeps only the message of
			// ErrUnknownIPMode, not the error itself.
			if (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), controllers.ErrUnknownIPMode.Error())) {
				t.Fatalf("parse %v: error %v, want error: %v", tc.args, err, tc.wantErr)
			}
			if err == nil && o.IPMode != tc.want {
				t.Errorf("parse %v: IPMode = %q, want %q", tc.args, o.IPMode, tc.want)
			}
		})
	}
}

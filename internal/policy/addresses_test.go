package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go4.org/netipx"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		entry   string
		want    string // FormatRange of the result
		wantErr error
	}{
		{entry: "10.0.0.0/24", want: "10.0.0.0/24"},
		{entry: "10.0.0.7/24", want: "10.0.0.0/24"}, // host bits masked, as the CRD accepts them
		{entry: "10.0.0.1/32", want: "10.0.0.1/32"},
		{entry: "fc00:f853:ccd:e799::/124", want: "fc00:f853:ccd:e799::/124"},
		{entry: "192.168.9.1-192.168.9.5", want: "192.168.9.1-192.168.9.5"},
		{entry: "192.168.9.1 - 192.168.9.5", want: "192.168.9.1-192.168.9.5"},
		{entry: "192.168.9.1  -192.168.9.5", want: "192.168.9.1-192.168.9.5"},
		{entry: "192.168.9.0-192.168.9.255", want: "192.168.9.0/24"},
		{entry: "10.0.0.5-10.0.0.5", want: "10.0.0.5/32"},
		{entry: "fd01::10-fd01::20", want: "fd01::10-fd01::20"},
		{entry: "10.0.0.0/0", wantErr: ErrWholeFamily},
		{entry: "::/0", wantErr: ErrWholeFamily},
		{entry: "0.0.0.0-255.255.255.255", wantErr: ErrWholeFamily},
		{entry: "10.0.0.9-10.0.0.1", wantErr: ErrReversedRange},
		{entry: "fd01::20-fd01::10", wantErr: ErrReversedRange},
		{entry: "10.0.0.1-fd01::1", wantErr: ErrMixedFamily},
		{entry: "", wantErr: ErrInvalidAddress},
		{entry: "10.0.0.1", wantErr: ErrInvalidAddress},
		{entry: "10.0.0.0/33", wantErr: ErrInvalidAddress},
		{entry: " 10.0.0.0/24", wantErr: ErrInvalidAddress},
		{entry: "10.0.0.1-", wantErr: ErrInvalidAddress},
		{entry: "-10.0.0.1", wantErr: ErrInvalidAddress},
		{entry: "10.0.0.1-10.0.0.2-10.0.0.3", wantErr: ErrInvalidAddress},
		{entry: "fe80::1%eth0-fe80::9", wantErr: ErrInvalidAddress},
		{entry: "::ffff:10.0.0.0/120", wantErr: ErrInvalidAddress},
		{entry: "::ffff:10.0.0.1-::ffff:10.0.0.9", wantErr: ErrInvalidAddress},
		{entry: "pool", wantErr: ErrInvalidAddress},
	}
	for _, tc := range tests {
		t.Run(tc.entry, func(t *testing.T) {
			r, err := ParseAddress(tc.entry)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseAddress(%q) error = %v, want %v", tc.entry, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q) error = %v", tc.entry, err)
			}
			if got := FormatRange(r); got != tc.want {
				t.Errorf("ParseAddress(%q) = %s, want %s", tc.entry, got, tc.want)
			}
		})
	}
}

func TestParseAddressesNamesTheEntry(t *testing.T) {
	got, err := ParseAddresses([]string{"10.0.0.0/24", "10.0.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netipx.IPRange{netipx.MustParseIPRange("10.0.0.0-10.0.0.255"), netipx.MustParseIPRange("10.0.1.0-10.0.1.255")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netipx.IPRange) bool { return a == b })); diff != "" {
		t.Errorf("ParseAddresses (-want +got):\n%s", diff)
	}

	_, err = ParseAddresses([]string{"10.0.0.0/24", "10.0.2.9-10.0.2.1"})
	if !errors.Is(err, ErrReversedRange) || !strings.Contains(err.Error(), `addresses[1] "10.0.2.9-10.0.2.1"`) {
		t.Errorf("ParseAddresses error = %v, want ErrReversedRange naming addresses[1]", err)
	}
}

func FuzzParseAddresses(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/24", "192.168.9.1 - 192.168.9.5", "fd01::10-fd01::20", "::/0",
		"10.0.0.9-10.0.0.1", "10.0.0.1-fd01::1", "1.2.3.4/32", "::ffff:1.2.3.4/128",
		"0.0.0.0-255.255.255.254", "fe80::1%eth0-fe80::2", "10.0.0.0/24\n10.0.0.0/25",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		// One fuzz input is split on newlines so that lists are fuzzed too.
		entries := strings.Split(in, "\n")
		rs, err := ParseAddresses(entries)
		if err != nil {
			if rs != nil {
				t.Fatalf("ParseAddresses(%q) returned ranges with error %v", entries, err)
			}
			return
		}
		if len(rs) != len(entries) {
			t.Fatalf("ParseAddresses(%q) = %d ranges, want %d", entries, len(rs), len(entries))
		}
		for i, r := range rs {
			if !r.IsValid() {
				t.Fatalf("entry %q: invalid range %v", entries[i], r)
			}
			if r.From().Is4() != r.To().Is4() || r.From().Is4In6() || r.From().Zone() != "" || r.To().Zone() != "" {
				t.Fatalf("entry %q: range %v mixes families or carries a zone", entries[i], r)
			}
			if p, ok := r.Prefix(); ok && p.Bits() == 0 {
				t.Fatalf("entry %q: accepted a whole family: %v", entries[i], r)
			}
			// Round trip: the canonical text parses to the same range, and
			// both ends are in it.
			text := FormatRange(r)
			back, err := ParseAddress(text)
			if err != nil || back != r {
				t.Fatalf("entry %q: FormatRange = %q parses to %v, %v; want %v", entries[i], text, back, err, r)
			}
			if !r.Contains(r.From()) || !r.Contains(r.To()) {
				t.Fatalf("entry %q: range %v does not contain its ends", entries[i], r)
			}
			// A plain CIDR entry must mean exactly that prefix.
			if p, err := netip.ParsePrefix(entries[i]); err == nil && netipx.RangeOfPrefix(p.Masked()) != r {
				t.Fatalf("entry %q: got %v, want the prefix %v", entries[i], r, p.Masked())
			}
		}
	})
}

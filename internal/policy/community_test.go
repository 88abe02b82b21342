package policy

import (
	"errors"
	"testing"
)

func TestParseCommunity(t *testing.T) {
	tests := []struct {
		in      string
		want    Community
		wantErr error
	}{
		{in: "65535:65282", want: Community{Standard: 0xffffff02}},
		{in: "0:0", want: Community{}},
		{in: "64512:100", want: Community{Standard: 64512<<16 | 100}},
		{in: "large:4294967295:1:2", want: Community{Large: true, Parts: [3]uint32{4294967295, 1, 2}}},
		{in: "65536:1", wantErr: ErrCommunityValue},
		{in: "1:65536", wantErr: ErrCommunityValue},
		{in: "large:4294967296:1:2", wantErr: ErrCommunityValue},
		{in: "no-advertise", wantErr: ErrCommunityFormat},
		{in: "1:2:3", wantErr: ErrCommunityFormat},
		{in: "large:1:2", wantErr: ErrCommunityFormat},
		{in: "-1:2", wantErr: ErrCommunityFormat},
		{in: "+1:2", wantErr: ErrCommunityFormat},
		{in: ":2", wantErr: ErrCommunityFormat},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCommunity(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseCommunity(%q) error = %v, want %v", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseCommunity(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if got.String() != tc.in {
				t.Errorf("ParseCommunity(%q).String() = %q", tc.in, got.String())
			}
		})
	}
}

func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{"65535:65282", "large:1:2:3", "gold", "65536:1", "large:4294967296:0:0", "1:2:3", "01:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseCommunity(in)
		if err != nil {
			if !errors.Is(err, ErrCommunityFormat) && !errors.Is(err, ErrCommunityValue) {
				t.Fatalf("ParseCommunity(%q) error %v is neither ErrCommunityFormat nor ErrCommunityValue", in, err)
			}
			return
		}
		back, err := ParseCommunity(c.String())
		if err != nil || back != c {
			t.Fatalf("ParseCommunity(%q) = %+v; its String %q parses to %+v, %v", in, c, c.String(), back, err)
		}
		if !c.Large && c.Parts != [3]uint32{} {
			t.Fatalf("ParseCommunity(%q) = %+v: standard community with large parts", in, c)
		}
	})
}

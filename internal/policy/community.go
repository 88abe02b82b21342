package policy

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors for community values.
var (
	// ErrCommunityFormat: the text has neither the "a:b" nor the
	// "large:a:b:c" shape, so it can only be an alias.
	ErrCommunityFormat = errors.New("not a community value")
	// ErrCommunityValue: the shape is right but a part is out of range.
	ErrCommunityValue = errors.New("community part out of range")
)

// Community is one BGP community: a standard (RFC 1997) 32-bit value, or a
// large (RFC 8092) one of three 32-bit parts when Large is true.
type Community struct {
	Large    bool
	Standard uint32
	Parts    [3]uint32
}

// String writes c in the syntax ParseCommunity reads.
func (c Community) String() string {
	if c.Large {
		return fmt.Sprintf("large:%d:%d:%d", c.Parts[0], c.Parts[1], c.Parts[2])
	}
	return fmt.Sprintf("%d:%d", c.Standard>>16, c.Standard&0xffff)
}

// compare orders standard communities before large ones, then by value.
func (c Community) compare(o Community) int {
	if c.Large != o.Large {
		if c.Large {
			return 1
		}
		return -1
	}
	if !c.Large {
		return cmp.Compare(c.Standard, o.Standard)
	}
	for i := range c.Parts {
		if n := cmp.Compare(c.Parts[i], o.Parts[i]); n != 0 {
			return n
		}
	}
	return 0
}

// ParseCommunity parses "a:b" (two 16-bit parts) or "large:a:b:c" (three
// 32-bit parts). A text of another shape fails with ErrCommunityFormat, one
// of the right shape with a part out of range with ErrCommunityValue.
func ParseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 2:
		hi, err := communityPart(parts[0], 16)
		if err != nil {
			return Community{}, fmt.Errorf("parse community %q: %w", s, err)
		}
		lo, err := communityPart(parts[1], 16)
		if err != nil {
			return Community{}, fmt.Errorf("parse community %q: %w", s, err)
		}
		return Community{Standard: hi<<16 | lo}, nil
	case len(parts) == 4 && parts[0] == "large":
		var c Community
		c.Large = true
		for i, p := range parts[1:] {
			v, err := communityPart(p, 32)
			if err != nil {
				return Community{}, fmt.Errorf("parse community %q: %w", s, err)
			}
			c.Parts[i] = v
		}
		return c, nil
	}
	return Community{}, fmt.Errorf("parse community %q: %w", s, ErrCommunityFormat)
}

func communityPart(s string, bits int) (uint32, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, ErrCommunityFormat
	}
	v, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: %q does not fit in %d bits", ErrCommunityValue, s, bits)
	}
	return uint32(v), nil
}

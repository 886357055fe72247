package sync

import "testing"

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
		ok   bool
	}{
		{"s0", Token{}, true},
		{"s42", Token{Pos: 42}, true},
		{"s42_7", Token{Pos: 42, ToDevice: 7}, true},
		{"s9223372036854775807", Token{Pos: 9223372036854775807}, true},
		{"", Token{}, false},
		{"s", Token{}, false},
		{"42", Token{}, false},
		{"t1_2", Token{}, false},
		{"s-1", Token{}, false},
		{"s+1", Token{}, false},
		{"s01", Token{}, false},
		{"s42_", Token{}, false},
		{"s42_42", Token{}, false}, // to-device never catches up inside a token
		{"s42_0", Token{}, false},  // 0 would mean "not lagging": not canonical
		{"s42_50", Token{}, false},
		{"s9223372036854775808", Token{}, false},
		{"s1 ", Token{}, false},
	} {
		got, err := ParseToken(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseToken(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"s0", "s1", "s42_7", "s01", "s-1", "s_", "s9223372036854775807", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		if tok.Pos < 0 || tok.ToDevice < 0 || (tok.ToDevice != 0 && tok.ToDevice >= tok.Pos) {
			t.Fatalf("ParseToken(%q) accepted an impossible token %+v", s, tok)
		}
		if got := tok.String(); got != s {
			t.Fatalf("ParseToken(%q).String() = %q: accepted tokens must round-trip", s, got)
		}
	})
}

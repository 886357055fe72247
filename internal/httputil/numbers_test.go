package httputil

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFiniteNumbers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, true},
		{`{"a":1,"b":-2.5e3,"c":[1e308,-1e308,0.1E-400]}`, true},
		{`{"a":1e999}`, false},
		{`{"a":-1E+400}`, false},
		{`[1,2,{"x":[3e309]}]`, false},
		{`{"s":"1e999 in a string is text"}`, true},
		{`{"s":"escaped \" quote 1e999","n":2}`, true},
		{`{"s":"\\","n":1e999}`, false},
		{`{"n":` + strings.Repeat("9", 400) + `}`, false},
		{`{"n":` + strings.Repeat("9", 300) + `}`, true},
	} {
		if !json.Valid([]byte(tc.in)) {
			t.Fatalf("test input %q is not JSON", tc.in)
		}
		if got := FiniteNumbers([]byte(tc.in)); got != tc.want {
			t.Errorf("FiniteNumbers(%.60q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzFiniteNumbers: for valid JSON, FiniteNumbers agrees with whether
// encoding/json can decode the value.
func FuzzFiniteNumbers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1e999}`, `[1.5,"1e999"]`, `{"a":"\\\"","b":-0.0e-999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		var v any
		decodes := json.Unmarshal(b, &v) == nil
		if got := FiniteNumbers(b); got != decodes {
			t.Fatalf("FiniteNumbers(%q) = %v, but encoding/json decodes it: %v", b, got, decodes)
		}
	})
}

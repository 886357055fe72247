package main

import (
	"testing"
	"time"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		sign    int
		want    time.Time
		wantErr bool
	}{
		{"7d", +1, now.Add(7 * 24 * time.Hour), false},
		{"7d", -1, now.Add(-7 * 24 * time.Hour), false},
		{"12h", +1, now.Add(12 * time.Hour), false},
		{"90m", -1, now.Add(-90 * time.Minute), false},
		{"2026-12-31", +1, time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC), false},
		{"2026-07-01T08:30:00+02:00", +1, time.Date(2026, 7, 1, 6, 30, 0, 0, time.UTC), false},
		{"-3d", +1, time.Time{}, true},
		{"soon", +1, time.Time{}, true},
		{"", +1, time.Time{}, true},
	} {
		got, err := parseWhen(tc.in, now, tc.sign)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !got.Equal(tc.want)) {
			t.Errorf("parseWhen(%q, %+d) = %v, %v; want %v (error %v)", tc.in, tc.sign, got, err, tc.want, tc.wantErr)
		}
	}
}

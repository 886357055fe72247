package care

import (
	"testing"
	"time"
)

func TestClosedAt(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	// 2026-12-07 is a Monday
	hours := Hours{"mon": {{"08:00", "12:00"}, {"14:00", "18:00"}}, "tue": {{"08:00", "12:00"}}, "fri": {{"08:00", "12:00"}}}
	holiday := []Absence{{StartTS: at("2026-12-08 00:00").UnixMilli(), EndTS: at("2026-12-10 00:00").UnixMilli(), Note: "Urlaub"}}
	for _, tc := range []struct {
		name     string
		hours    Hours
		absences []Absence
		now      string
		closed   bool
		reopens  string // "" = zero
		absence  string
	}{
		{"inside morning hours", hours, nil, "2026-12-07 09:30", false, "", ""},
		{"lunch break", hours, nil, "2026-12-07 12:30", true, "2026-12-07 14:00", ""},
		{"closing time is closed", hours, nil, "2026-12-07 18:00", true, "2026-12-08 08:00", ""},
		{"weekend until monday", hours, nil, "2026-12-05 10:00", true, "2026-12-07 08:00", ""},
		{"no hours: always open", nil, nil, "2026-12-05 03:00", false, "", ""},
		{"absence during hours", hours, holiday, "2026-12-08 09:00", true, "2026-12-11 08:00", "Urlaub"},
		{"evening before an absence skips it", hours, holiday, "2026-12-07 19:00", true, "2026-12-11 08:00", ""},
		{"no hours but an absence", nil, holiday, "2026-12-09 10:00", true, "2026-12-10 00:00", "Urlaub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := closedAt(tc.hours, berlin, tc.absences, at(tc.now))
			if c.Closed != tc.closed {
				t.Fatalf("closed = %v, want %v", c.Closed, tc.closed)
			}
			want := time.Time{}
			if tc.reopens != "" {
				want = at(tc.reopens)
			}
			if !c.Reopens.Equal(want) {
				t.Errorf("reopens %v, want %v", c.Reopens.In(berlin), want)
			}
			if c.Absence != tc.absence {
				t.Errorf("absence %q, want %q", c.Absence, tc.absence)
			}
		})
	}
}

func TestHoursValidate(t *testing.T) {
	for _, tc := range []struct {
		h  Hours
		ok bool
	}{
		{Hours{"mon": {{"08:00", "12:00"}}}, true},
		{Hours{"mon": {{"08:00", "24:00"}}}, true},
		{Hours{"monday": {{"08:00", "12:00"}}}, false},
		{Hours{"mon": {{"12:00", "08:00"}}}, false},
		{Hours{"mon": {{"8:00", "12:00"}}}, false},
		{Hours{"mon": {{"08:60", "12:00"}}}, false},
	} {
		if err := tc.h.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%v) = %v, want ok=%v", tc.h, err, tc.ok)
		}
	}
}

package care_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/care"
	"praxis/internal/hstest"
)

// TestClosedNoticeOncePerPeriod: a patient writing while the practice is
// closed gets one notice per closed period, naming when the practice is
// back and the emergency number; while open, none.
func TestClosedNoticeOncePerPeriod(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		berlin, _ := time.LoadLocation("Europe/Berlin")
		var mu sync.Mutex
		now := time.Date(2026, 12, 5, 10, 0, 0, 0, berlin) // a Saturday
		setNow := func(s string) {
			tm, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			now = tm
			mu.Unlock()
		}
		srv.Care.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		// notices go out before the patient's send returns, so the test
		// needs no waiting
		srv.Care.SetBackground(func(fn func()) { fn() })

		n := newPractice(t, srv, "hausarzt", map[string]string{"doc": care.RoleDoctor})
		hours := care.Hours{"mon": {{"08:00", "12:00"}}, "tue": {{"08:00", "12:00"}}, "fri": {{"08:00", "12:00"}}}
		if _, err := srv.Care.UpdatePractice(ctx, root, "hausarzt", care.PracticeUpdate{OpeningHours: &hours}); err != nil {
			t.Fatal(err)
		}
		patient := srv.Register(t, "anna")
		room := couple(t, patient, n.code(t, care.CodePatient))

		write := func() {
			t.Helper()
			if _, err := patient.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Frage"}); err != nil {
				t.Fatal(err)
			}
		}
		for _, step := range []struct {
			at      string
			notices int
		}{
			{"2026-12-05 10:00", 1}, // Saturday: closed until Monday 08:00
			{"2026-12-05 23:00", 1}, // same closed period: no second notice
			{"2026-12-07 09:00", 1}, // Monday, open
			{"2026-12-07 13:00", 2}, // closed again until Tuesday: a new period
		} {
			setNow(step.at)
			write()
			if got := notices(t, patient, room, n.practice.ServiceUser); len(got) != step.notices {
				t.Fatalf("at %s: %d notices, want %d: %q", step.at, len(got), step.notices, got)
			}
		}
		got := notices(t, patient, room, n.practice.ServiceUser)
		if !strings.Contains(got[0], "07.12.2026 08:00") || !strings.Contains(got[0], "0800 123") {
			t.Errorf("first notice %q should name Monday 08:00 and the emergency number", got[0])
		}

		// an absence: the notice names its note and the day after it
		start, _ := time.ParseInLocation("2006-01-02", "2026-12-08", berlin)
		if _, err := srv.Care.AddAbsence(ctx, root, "hausarzt", start, start.AddDate(0, 0, 2), "Urlaub"); err != nil {
			t.Fatal(err)
		}
		setNow("2026-12-08 09:00")
		write()
		got = notices(t, patient, room, n.practice.ServiceUser)
		if len(got) != 3 || !strings.Contains(got[2], "Urlaub") || !strings.Contains(got[2], "11.12.2026 08:00") {
			t.Errorf("absence notice = %q, want a third one naming Urlaub and Friday 08:00", got)
		}
	}, enforce)
}

// notices returns the bodies of the service account's notices in room,
// oldest first.
func notices(t *testing.T, c *mautrix.Client, room id.RoomID, service string) []string {
	t.Helper()
	resp, err := c.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		e := resp.Chunk[i]
		if e.Sender.String() != service || e.Type != event.EventMessage {
			continue
		}
		_ = e.Content.ParseRaw(e.Type)
		if m := e.Content.AsMessage(); m.MsgType == event.MsgNotice {
			out = append(out, m.Body)
		}
	}
	return out
}

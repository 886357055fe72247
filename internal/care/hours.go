package care

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	_ "time/tzdata" // practices name IANA zones; a minimal host may lack the database

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/roomserver"
)

// Hours are weekly opening hours in the practice's time zone: weekday
// ("mon" … "sun") → intervals ["08:00", "12:00"]. No entry at all means
// always open; a weekday without entry is closed all day.
type Hours map[string][][2]string

var weekdays = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"} // time.Weekday order

// Validate checks day names and HH:MM intervals.
func (h Hours) Validate() error {
	for day, ivs := range h {
		if !contains(weekdays, day) {
			return fmt.Errorf("opening hours: unknown day %q (want mon … sun)", day)
		}
		for _, iv := range ivs {
			a, err1 := clock(iv[0])
			b, err2 := clock(iv[1])
			if err1 != nil || err2 != nil || a >= b {
				return fmt.Errorf("opening hours %s: %q–%q is not an interval HH:MM–HH:MM", day, iv[0], iv[1])
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clock parses HH:MM (24:00 allowed) into minutes after midnight.
func clock(s string) (int, error) {
	var hh, mm int
	if len(s) != 5 || s[2] != ':' {
		return 0, errors.New("want HH:MM")
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &hh, &mm); err != nil || hh > 24 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, errors.New("want HH:MM")
	}
	return hh*60 + mm, nil
}

// Absence is a period the practice is closed whatever its hours say.
type Absence struct {
	ID       int64  `json:"absence_id"`
	Practice string `json:"practice_id"`
	StartTS  int64  `json:"start_ts"`
	EndTS    int64  `json:"end_ts"`
	Note     string `json:"note"`
}

// AddAbsence records a closed period.
func (s *Service) AddAbsence(ctx context.Context, actor, practiceID string, start, end time.Time, note string) (*Absence, error) {
	if !end.After(start) {
		return nil, httputil.InvalidParam("an absence must end after it starts")
	}
	if len(note) > 200 {
		return nil, httputil.InvalidParam("note is too long (200 bytes at most)")
	}
	if _, err := s.Practice(ctx, practiceID); err != nil {
		return nil, err
	}
	a := &Absence{Practice: practiceID, StartTS: start.UnixMilli(), EndTS: end.UnixMilli(), Note: note}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.QueryRow(ctx, `INSERT INTO care_absences (practice_id, start_ts, end_ts, note) VALUES ($1, $2, $3, $4) RETURNING absence_id`,
			practiceID, a.StartTS, a.EndTS, note).Scan(&a.ID); err != nil {
			return fmt.Errorf("add absence: %w", err)
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "practice.absence.add", Target: practiceID, Practice: practiceID,
			Params: map[string]any{"absence_id": a.ID, "start_ts": a.StartTS, "end_ts": a.EndTS}})
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Absences lists a practice's absences that have not ended before since.
func (s *Service) Absences(ctx context.Context, practiceID string, since time.Time) ([]Absence, error) {
	rows, err := s.db.Query(ctx, `SELECT absence_id, practice_id, start_ts, end_ts, note FROM care_absences
		WHERE practice_id = $1 AND end_ts > $2 ORDER BY start_ts`, practiceID, since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list absences of %s: %w", practiceID, err)
	}
	defer rows.Close()
	out := []Absence{}
	for rows.Next() {
		var a Absence
		if err := rows.Scan(&a.ID, &a.Practice, &a.StartTS, &a.EndTS, &a.Note); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeleteAbsence removes an absence.
func (s *Service) DeleteAbsence(ctx context.Context, actor, practiceID string, id int64) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `DELETE FROM care_absences WHERE absence_id = $1 AND practice_id = $2`, id, practiceID)
		if err != nil {
			return fmt.Errorf("delete absence: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return httputil.NotFound(fmt.Sprintf("no absence %d of practice %s", id, practiceID))
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "practice.absence.delete", Target: practiceID, Practice: practiceID, Params: map[string]any{"absence_id": id}})
	})
}

// Closure says whether a practice is closed at a moment and until when.
type Closure struct {
	Closed bool
	// Reopens is the next opening (zero if unknown within two weeks).
	Reopens time.Time
	// Absence is the note of the absence causing the closure, if any.
	Absence string
}

// closedAt evaluates hours and absences at t.
func closedAt(hours Hours, loc *time.Location, absences []Absence, t time.Time) Closure {
	var c Closure
	// absences may chain (holiday followed by a training day): follow them
	for i := 0; i < len(absences)+1; i++ {
		moved := false
		for _, a := range absences {
			if t.UnixMilli() >= a.StartTS && t.UnixMilli() < a.EndTS {
				c.Closed = true
				if c.Absence == "" {
					c.Absence = a.Note
					if c.Absence == "" {
						c.Absence = "-"
					}
				}
				t = time.UnixMilli(a.EndTS)
				moved = true
			}
		}
		if !moved {
			break
		}
	}
	open, next := openAt(hours, loc, t)
	if open {
		if c.Closed {
			c.Reopens = t
		}
		return c
	}
	c.Closed = true
	c.Reopens = next
	// an absence starting before the next opening pushes it further
	if !next.IsZero() {
		for _, a := range absences {
			if next.UnixMilli() >= a.StartTS && next.UnixMilli() < a.EndTS {
				inner := closedAt(hours, loc, absences, time.UnixMilli(a.EndTS))
				c.Reopens = inner.Reopens
				if !inner.Closed {
					c.Reopens = time.UnixMilli(a.EndTS)
				}
			}
		}
	}
	return c
}

// openAt reports whether hours have t inside an interval, else the next
// opening within two weeks.
func openAt(hours Hours, loc *time.Location, t time.Time) (bool, time.Time) {
	if len(hours) == 0 {
		return true, time.Time{}
	}
	lt := t.In(loc)
	day := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, loc)
	for d := 0; d < 15; d++ {
		date := day.AddDate(0, 0, d)
		for _, iv := range hours[weekdays[date.Weekday()]] {
			a, _ := clock(iv[0])
			b, _ := clock(iv[1])
			start := date.Add(time.Duration(a) * time.Minute)
			end := date.Add(time.Duration(b) * time.Minute)
			if !lt.Before(start) && lt.Before(end) {
				return true, time.Time{}
			}
			if start.After(lt) {
				return false, start
			}
		}
	}
	return false, time.Time{}
}

// ClosureAt reports whether a practice is closed at t.
func (s *Service) ClosureAt(ctx context.Context, practiceID string, t time.Time) (*Practice, Closure, error) {
	p, err := s.Practice(ctx, practiceID)
	if err != nil {
		return nil, Closure{}, err
	}
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		loc = time.UTC
	}
	abs, err := s.Absences(ctx, practiceID, t)
	if err != nil {
		return nil, Closure{}, err
	}
	return p, closedAt(p.OpeningHours, loc, abs, t), nil
}

// noticeIfClosed sends the patient of a coupling room one notice per
// closed period when they write while the practice is closed.
func (s *Service) noticeIfClosed(ctx context.Context, roomID, practiceID string) error {
	now := s.now()
	p, c, err := s.ClosureAt(ctx, practiceID, now)
	if err != nil || !c.Closed {
		return err
	}
	// The period is identified by when it ends; an unknown end (no
	// opening within two weeks) counts as one period.
	var reopens int64
	if !c.Reopens.IsZero() {
		reopens = c.Reopens.UnixMilli()
	}
	res, err := s.db.Exec(ctx, `INSERT INTO care_notices (room_id, reopens_ts, sent_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		roomID, reopens, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("record notice: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // this period's notice went out already
	}
	body := closedNotice(p, c)
	content := fmt.Sprintf(`{"msgtype":"m.notice","body":%q}`, body)
	_, err = s.rooms.Send(ctx, roomserver.SendRequest{RoomID: roomID, Sender: p.ServiceUser, Type: "m.room.message", Content: []byte(content)})
	if err != nil {
		return fmt.Errorf("send closed notice: %w", err)
	}
	slog.InfoContext(ctx, "closed notice sent", "room_id", roomID, "practice", practiceID)
	return nil
}

// closedNotice is the text of the automatic notice: when the practice is
// back and whom to call in an emergency. German first, the practices'
// language, then English.
func closedNotice(p *Practice, c Closure) string {
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		loc = time.UTC
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s ist zurzeit nicht erreichbar", p.Name)
	if c.Absence != "" && c.Absence != "-" {
		fmt.Fprintf(&b, " (%s)", c.Absence)
	}
	b.WriteString(".")
	if !c.Reopens.IsZero() {
		fmt.Fprintf(&b, " Wir sind ab %s wieder für Sie da.", c.Reopens.In(loc).Format("02.01.2006 15:04"))
	}
	b.WriteString(" Ihre Nachricht ist angekommen.")
	if p.EmergencyPhone != "" {
		fmt.Fprintf(&b, " In dringenden Fällen: %s.", p.EmergencyPhone)
	}
	b.WriteString(" Im Notfall: 112.\n\n")
	fmt.Fprintf(&b, "%s is currently closed.", p.Name)
	if !c.Reopens.IsZero() {
		fmt.Fprintf(&b, " We are back on %s.", c.Reopens.In(loc).Format("2006-01-02 15:04"))
	}
	if p.EmergencyPhone != "" {
		fmt.Fprintf(&b, " Urgent: %s.", p.EmergencyPhone)
	}
	b.WriteString(" Emergency: 112.")
	return b.String()
}

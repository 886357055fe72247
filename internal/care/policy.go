package care

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/roomserver"
)

// PermissionConfigType is the German TI-Messenger's invite permission
// setting in account data: {"defaultSetting": "allow all" | "block all",
// "userExceptions": {"@u:s": {}}, "serverExceptions": {"s": {}},
// "groupExceptions": [{"groupName": "isInsuredPerson"}]}; an exception
// inverts the default for whoever it matches.
const PermissionConfigType = "de.gematik.tim.account.permissionconfig.pro.v1"

// party is what the contact policy knows about one user.
type party struct {
	id      string
	local   bool
	known   bool // a local account exists
	kind    string
	isAdmin bool
	// practices the user acts for: staff's practice, a service account's practice
	practices []string
}

// restricted: under the health rules a patient, and every local account
// that is neither staff, service account nor node admin (a
// self-registered or former staff account), may reach only the practices
// it is coupled with. Failing closed keeps an account whose kind was
// never set from reaching anybody.
func (p *party) restricted() bool {
	return p.local && p.known && !p.isAdmin && p.kind != KindStaff && p.kind != KindService
}

// parties loads what the policy needs about users in one round trip each.
func (s *Service) parties(ctx context.Context, db *storage.DB, ids []string) (map[string]*party, error) {
	out := make(map[string]*party, len(ids))
	var local []string
	for _, id := range ids {
		if _, ok := out[id]; ok {
			continue
		}
		p := &party{id: id, local: strings.HasSuffix(id, ":"+s.serverName)}
		out[id] = p
		if p.local {
			local = append(local, id)
		}
	}
	if len(local) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT user_id, kind, is_admin FROM accounts WHERE user_id IN ($IN)`, 0, local)
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read account kinds: %w", err)
	}
	for rows.Next() {
		var id, kind string
		var admin bool
		if err := rows.Scan(&id, &kind, &admin); err != nil {
			rows.Close()
			return nil, err
		}
		out[id].known, out[id].kind, out[id].isAdmin = true, kind, admin
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	list, args := storage.In(`$IN`, 0, local)
	q = strings.ReplaceAll(`SELECT user_id, practice_id FROM care_staff WHERE user_id IN ($IN)
		UNION ALL SELECT service_user, practice_id FROM care_practices WHERE service_user IN ($IN)`, "$IN", list)
	rows, err = db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read staff practices: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, practice string
		if err := rows.Scan(&id, &practice); err != nil {
			return nil, err
		}
		out[id].practices = append(out[id].practices, practice)
	}
	return out, rows.Err()
}

// coupled reports whether patient has an active coupling with one of the
// practices.
func (s *Service) coupled(ctx context.Context, db *storage.DB, patient string, practices []string) (bool, error) {
	if len(practices) == 0 {
		return false, nil
	}
	q, args := storage.In(`SELECT COUNT(*) FROM care_couplings WHERE patient = $1 AND ended_ts = 0 AND practice_id IN ($IN)`, 1, practices)
	var n int
	if err := db.QueryRow(ctx, q, append([]any{patient}, args...)...).Scan(&n); err != nil {
		return false, fmt.Errorf("read couplings of %s: %w", patient, err)
	}
	return n > 0, nil
}

// mayContact is the contact rule between two users: unrestricted
// accounts reach each other freely; a restricted one (a patient) and
// another user may be in touch only when the other is staff or the
// service account of a practice the patient is coupled with. Two
// patients never.
func (s *Service) mayContact(ctx context.Context, db *storage.DB, a, b *party) (bool, error) {
	if a.id == b.id {
		return true, nil
	}
	ra, rb := a.restricted(), b.restricted()
	switch {
	case !ra && !rb:
		return true, nil
	case ra && rb:
		return false, nil
	case ra:
		return s.coupled(ctx, db, a.id, b.practices)
	default:
		return s.coupled(ctx, db, b.id, a.practices)
	}
}

// CheckEvent is the contact policy on the event write path
// (roomserver.Policy). Every local invite, join, knock and join-rule
// change passes here, whatever endpoint caused it.
func (s *Service) CheckEvent(ctx context.Context, db *storage.DB, ev roomserver.PolicyEvent) error {
	if !s.enforce || isServerAct(ctx) {
		return nil
	}
	switch ev.Type {
	case "m.room.member":
		if ev.StateKey == nil {
			return nil
		}
		target := *ev.StateKey
		switch m := gjson.GetBytes(ev.Content, "membership").String(); m {
		case "invite":
			return s.checkEntry(ctx, db, ev, ev.Sender, target, true)
		case "join", "knock":
			if ev.PrevMembership == "join" {
				return nil // a profile change
			}
			return s.checkEntry(ctx, db, ev, target, target, ev.PrevMembership == "invite")
		}
	case "m.room.join_rules":
		switch gjson.GetBytes(ev.Content, "join_rule").String() {
		case "public", "knock", "knock_restricted", "restricted":
			return s.checkOpenRoom(ctx, db, ev)
		}
	}
	return nil
}

// checkEntry decides whether target may enter the room (invited by
// sender, or joining by themself): sender must be allowed to contact
// target, and target everybody already in the room.
func (s *Service) checkEntry(ctx context.Context, db *storage.DB, ev roomserver.PolicyEvent, sender, target string, invited bool) error {
	members, err := ev.Members(ctx)
	if err != nil {
		return err
	}
	ps, err := s.parties(ctx, db, append([]string{sender, target}, members...))
	if err != nil {
		return err
	}
	snd, tgt := ps[sender], ps[target]
	// the creator's join is the first member event of a new room
	if sender == target && tgt.restricted() && !invited && (len(members) > 0 || ev.Remote) {
		return httputil.Forbidden("patients can join only rooms they are invited to")
	}
	if sender != target {
		ok, err := s.mayContact(ctx, db, snd, tgt)
		if err != nil {
			return err
		}
		if !ok {
			return httputil.Forbidden(denial(snd, tgt))
		}
		if err := s.checkPermissionConfig(ctx, snd, tgt); err != nil {
			return err
		}
	}
	for _, m := range members {
		if m == target || m == sender {
			continue
		}
		ok, err := s.mayContact(ctx, db, tgt, ps[m])
		if err != nil {
			return err
		}
		if !ok {
			return httputil.Forbidden(target + " cannot be in a room with " + m + " (contact policy)")
		}
	}
	return nil
}

func denial(from, to *party) string {
	switch {
	case from.restricted() && to.restricted():
		return "patients cannot contact other patients"
	case from.restricted():
		return "patients can contact only the practices they are coupled with"
	case !from.local:
		return to.id + " is a patient here and can be contacted only by the practices they are coupled with"
	default:
		return to.id + " is not a patient of your practice"
	}
}

// checkOpenRoom refuses to open a room to the public (or to knocks) when
// a patient sends it or is in the room.
func (s *Service) checkOpenRoom(ctx context.Context, db *storage.DB, ev roomserver.PolicyEvent) error {
	members, err := ev.Members(ctx)
	if err != nil {
		return err
	}
	ps, err := s.parties(ctx, db, append([]string{ev.Sender}, members...))
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.restricted() {
			if p.id == ev.Sender {
				return httputil.Forbidden("patients cannot create or open public rooms")
			}
			return httputil.Forbidden("a room with patients cannot be opened to others")
		}
	}
	return nil
}

// checkPermissionConfig honours the invitee's TI-Messenger permission
// setting (account data), for local invitees.
func (s *Service) checkPermissionConfig(ctx context.Context, from, to *party) error {
	if !to.local || !to.known {
		return nil
	}
	raw, err := s.users.AccountData(ctx, to.id, "", PermissionConfigType)
	if err != nil || len(raw) == 0 {
		return nil // no setting (or unreadable: the contact policy already held)
	}
	if !PermissionAllows(raw, from.id, from.restricted()) {
		return httputil.Forbidden(to.id + " does not accept invites from " + from.id)
	}
	return nil
}

// PermissionAllows evaluates a permission config for an inviter.
func PermissionAllows(raw json.RawMessage, inviter string, inviterIsPatient bool) bool {
	var pc struct {
		DefaultSetting   string                     `json:"defaultSetting"`
		UserExceptions   map[string]json.RawMessage `json:"userExceptions"`
		ServerExceptions map[string]json.RawMessage `json:"serverExceptions"`
		GroupExceptions  []struct {
			GroupName string `json:"groupName"`
		} `json:"groupExceptions"`
	}
	if json.Unmarshal(raw, &pc) != nil {
		return true
	}
	allow := pc.DefaultSetting != "block all"
	_, server, _ := strings.Cut(inviter, ":")
	_, userExc := pc.UserExceptions[inviter]
	_, serverExc := pc.ServerExceptions[server]
	groupExc := false
	for _, g := range pc.GroupExceptions {
		if g.GroupName == "isInsuredPerson" && inviterIsPatient {
			groupExc = true
		}
	}
	if userExc || serverExc || groupExc {
		return !allow
	}
	return allow
}

// Restricted reports whether userID is restricted by the contact policy
// (a patient under the health rules).
func (s *Service) Restricted(ctx context.Context, userID string) (bool, error) {
	if !s.enforce {
		return false, nil
	}
	ps, err := s.parties(ctx, s.db, []string{userID})
	if err != nil {
		return false, err
	}
	return ps[userID].restricted(), nil
}

// MayContact reports whether two users may be in touch under the contact
// policy (always true when the health rules are off).
func (s *Service) MayContact(ctx context.Context, a, b string) (bool, error) {
	if !s.enforce {
		return true, nil
	}
	ps, err := s.parties(ctx, s.db, []string{a, b})
	if err != nil {
		return false, err
	}
	return s.mayContact(ctx, s.db, ps[a], ps[b])
}

// Visible filters users a restricted viewer may look up (profile, user
// directory, device keys): themself and those they share a room with.
// An unrestricted viewer sees everyone.
func (s *Service) Visible(ctx context.Context, viewer string, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	restricted, err := s.Restricted(ctx, viewer)
	if err != nil {
		return nil, err
	}
	if !restricted {
		for _, id := range ids {
			out[id] = true
		}
		return out, nil
	}
	mine, err := s.rooms.JoinedRooms(ctx, viewer)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		out[id] = id == viewer
	}
	if len(mine) == 0 {
		return out, nil
	}
	var others []string
	for _, id := range ids {
		if id != viewer {
			others = append(others, id)
		}
	}
	if len(others) == 0 {
		return out, nil
	}
	// room_members is the room authority's table; the care domain reads
	// it (never writes) to answer "do these users share a room".
	q, args := storage.In(`SELECT DISTINCT m.user_id FROM room_members m JOIN rooms r ON r.room_nid = m.room_nid
		WHERE m.membership IN ('join', 'invite') AND r.room_id IN ($IN)`, 0, mine)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("shared rooms of %s: %w", viewer, err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if _, asked := out[u]; asked {
			out[u] = true
		}
	}
	return out, rows.Err()
}

// Written reacts to committed events (roomserver.Policy): a patient's
// message in a coupling room reopens a closed request and, while the
// practice is closed, earns one notice per closed period.
func (s *Service) Written(ctx context.Context, evs []roomserver.PolicyEvent) {
	var rooms, joins []string
	for _, ev := range evs {
		if ev.Type == "m.room.member" && ev.StateKey != nil && ev.Sender == *ev.StateKey && ev.PrevMembership != "join" &&
			gjson.GetBytes(ev.Content, "membership").String() == "join" && strings.HasSuffix(ev.Sender, ":"+s.serverName) {
			joins = append(joins, ev.RoomID+"\x00"+ev.Sender)
			continue
		}
		if ev.Type == "m.room.member" && ev.StateKey != nil && ev.Sender == *ev.StateKey && gjson.GetBytes(ev.Content, "membership").String() == "leave" {
			// a patient leaving their coupling room un-couples
			if _, err := s.db.Exec(ctx, `UPDATE care_couplings SET ended_ts = $1 WHERE room_id = $2 AND patient = $3 AND ended_ts = 0`,
				s.now().UnixMilli(), ev.RoomID, ev.Sender); err != nil {
				slog.WarnContext(ctx, "end coupling", "room_id", ev.RoomID, "err", err)
			}
			continue
		}
		if ev.StateKey != nil || (ev.Type != "m.room.message" && ev.Type != "m.room.encrypted") {
			continue
		}
		if !strings.HasSuffix(ev.Sender, ":"+s.serverName) {
			continue
		}
		rooms = append(rooms, ev.RoomID+"\x00"+ev.Sender)
	}
	if len(rooms) == 0 && len(joins) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	s.bg(func() {
		for _, rs := range joins {
			roomID, user, _ := strings.Cut(rs, "\x00")
			if err := s.joinClaims(ctx, roomID, user); err != nil {
				slog.WarnContext(ctx, "claim by join", "room_id", roomID, "err", err)
			}
		}
		for _, rs := range rooms {
			roomID, sender, _ := strings.Cut(rs, "\x00")
			if err := s.patientWrote(ctx, roomID, sender); err != nil {
				slog.WarnContext(ctx, "react to patient message", "room_id", roomID, "err", err)
			}
		}
	})
}

func (s *Service) patientWrote(ctx context.Context, roomID, sender string) error {
	var practice string
	err := s.db.QueryRow(ctx, `SELECT practice_id FROM care_couplings WHERE room_id = $1 AND patient = $2 AND ended_ts = 0`, roomID, sender).Scan(&practice)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // not the patient of a coupling room
	}
	if err != nil {
		return fmt.Errorf("read coupling: %w", err)
	}
	if err := s.reopen(ctx, roomID); err != nil {
		return err
	}
	return s.noticeIfClosed(ctx, roomID, practice)
}

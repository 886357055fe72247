package care

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/roomserver"
)

// Code kinds.
const (
	// CodePatient is handed to one patient in the practice: single use,
	// expires, and the coupling it makes is verified.
	CodePatient = "patient"
	// CodePractice is printed on a flyer or the website: reusable, and
	// its couplings are unverified until staff confirm in person.
	CodePractice = "practice"
)

// AliasPrefix starts a coupling alias: #couple-<code>:<server>.
const AliasPrefix = "couple-"

// DefaultPatientCodeTTL bounds a one-time code without --expires.
const DefaultPatientCodeTTL = 7 * 24 * time.Hour

// Code is a freshly created coupling code. Code itself is shown once:
// only its hash is stored.
type Code struct {
	Code       string `json:"code,omitempty"`
	CodeID     string `json:"code_id"`
	PracticeID string `json:"practice_id"`
	Kind       string `json:"kind"`
	Alias      string `json:"alias,omitempty"`
	Link       string `json:"link,omitempty"`
	CreatedBy  string `json:"created_by"`
	CreatedTS  int64  `json:"created_ts"`
	ExpiresTS  int64  `json:"expires_ts"`
	Uses       int64  `json:"uses"`
	Revoked    bool   `json:"revoked"`
}

// codeAlphabet avoids look-alikes (0/o, 1/l/i) for codes read off paper.
const codeAlphabet = "abcdefghjkmnpqrstuvwxyz23456789"

func randomCode(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	for i := range b {
		b[i] = codeAlphabet[int(b[i])%len(codeAlphabet)]
	}
	return string(b)
}

func hashCode(code string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(code)))
	return hex.EncodeToString(sum[:])
}

// CouplingAlias is the alias a code's QR code points to.
func (s *Service) CouplingAlias(code string) string {
	return "#" + AliasPrefix + code + ":" + s.serverName
}

// CouplingLink is the matrix.to link of a code: what the QR code holds,
// so that any Matrix client can open it.
func (s *Service) CouplingLink(code string) string {
	return "https://matrix.to/#/" + url.PathEscape(s.CouplingAlias(code))
}

// CreateCode creates a coupling code. ttl 0 means the default: seven days
// for a patient code, no expiry for a practice code.
func (s *Service) CreateCode(ctx context.Context, actor, practiceID, kind string, ttl time.Duration) (*Code, error) {
	if kind != CodePatient && kind != CodePractice {
		return nil, httputil.InvalidParam("kind must be patient or practice")
	}
	if ttl < 0 {
		return nil, httputil.InvalidParam("expiry must be positive")
	}
	if _, err := s.Practice(ctx, practiceID); err != nil {
		return nil, err
	}
	if ttl == 0 && kind == CodePatient {
		ttl = DefaultPatientCodeTTL
	}
	now := s.now()
	// 16 characters of a 31-letter alphabet: ~79 bits, not guessable
	// through the join endpoint.
	c := &Code{Code: randomCode(16), CodeID: randomCode(6), PracticeID: practiceID, Kind: kind, CreatedBy: actor, CreatedTS: now.UnixMilli()}
	if ttl > 0 {
		c.ExpiresTS = now.Add(ttl).UnixMilli()
	}
	c.Alias, c.Link = s.CouplingAlias(c.Code), s.CouplingLink(c.Code)
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		if _, err := tx.Exec(ctx, `INSERT INTO care_codes (code_hash, code_id, practice_id, kind, created_by, created_ts, expires_ts, lobby_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			hashCode(c.Code), c.CodeID, practiceID, kind, actor, c.CreatedTS, c.ExpiresTS, hashCode(lobbyLocalpart(c.Code))); err != nil {
			return fmt.Errorf("store code: %w", err)
		}
		// never the code itself: the audit log is kept forever
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "coupling.code.create", Target: c.CodeID, Practice: practiceID,
			Params: map[string]any{"kind": kind, "expires_ts": c.ExpiresTS}})
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Codes lists a practice's codes (without the codes themselves).
func (s *Service) Codes(ctx context.Context, practiceID string) ([]Code, error) {
	rows, err := s.db.Query(ctx, `SELECT code_id, practice_id, kind, created_by, created_ts, expires_ts, uses, revoked FROM care_codes
		WHERE practice_id = $1 ORDER BY created_ts, code_id`, practiceID)
	if err != nil {
		return nil, fmt.Errorf("list codes of %s: %w", practiceID, err)
	}
	defer rows.Close()
	out := []Code{}
	for rows.Next() {
		var c Code
		if err := rows.Scan(&c.CodeID, &c.PracticeID, &c.Kind, &c.CreatedBy, &c.CreatedTS, &c.ExpiresTS, &c.Uses, &c.Revoked); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RevokeCode makes a code unusable.
func (s *Service) RevokeCode(ctx context.Context, actor, practiceID, codeID string) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE care_codes SET revoked = TRUE WHERE code_id = $1 AND practice_id = $2`, codeID, practiceID)
		if err != nil {
			return fmt.Errorf("revoke code: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return httputil.NotFound("no code " + codeID + " of practice " + practiceID)
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "coupling.code.revoke", Target: codeID, Practice: practiceID})
	})
}

// Coupling is a patient's link with a practice: one room.
type Coupling struct {
	RoomID     string `json:"room_id"`
	PracticeID string `json:"practice_id"`
	Patient    string `json:"patient"`
	Verified   bool   `json:"verified"`
	Method     string `json:"method"`
	CreatedTS  int64  `json:"created_ts"`
	VerifiedTS int64  `json:"verified_ts,omitempty"`
	VerifiedBy string `json:"verified_by,omitempty"`
	EndedTS    int64  `json:"ended_ts,omitempty"`
}

// couplingContent is the coupling room's state event: routing data, no
// names, no health data.
func couplingContent(c *Coupling) json.RawMessage {
	m := map[string]any{"verified": c.Verified, "method": c.Method, "practice": c.PracticeID, "created_ts": c.CreatedTS}
	if c.Verified && c.VerifiedTS != 0 {
		m["verified_ts"] = c.VerifiedTS
	}
	b, _ := json.Marshal(m)
	return b
}

// JoinVirtual serves a join to an address that names no room of this
// server (roomserver.Policy): #couple-<code> redeems the code, and so does
// the code's lobby room ID (what the alias resolves to for clients that
// look it up before joining). Any other address is not ours: "".
func (s *Service) JoinVirtual(ctx context.Context, userID, address string) (string, error) {
	if code, ok := s.aliasCode(address); ok {
		return s.Redeem(ctx, userID, code)
	}
	codeHash, err := s.lobbyCode(ctx, address)
	if err != nil || codeHash == "" {
		return "", err
	}
	return s.redeem(ctx, userID, codeHash)
}

// aliasCode returns the code of a coupling alias of this server.
func (s *Service) aliasCode(alias string) (string, bool) {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || server != s.serverName || !strings.HasPrefix(local, AliasPrefix) {
		return "", false
	}
	return strings.TrimPrefix(local, AliasPrefix), true
}

// codeRow is a stored coupling code.
type codeRow struct {
	practiceID, kind, codeID string
	expires, uses            int64
	revoked                  bool
}

// usableCode reads a code by its hash: 404 when unknown, 403 saying why
// when it can no longer be used.
func (s *Service) usableCode(ctx context.Context, db *storage.DB, codeHash string) (*codeRow, error) {
	var c codeRow
	err := db.QueryRow(ctx, `SELECT practice_id, kind, code_id, expires_ts, uses, revoked FROM care_codes WHERE code_hash = $1`, codeHash).
		Scan(&c.practiceID, &c.kind, &c.codeID, &c.expires, &c.uses, &c.revoked)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, httputil.NotFound("unknown coupling code")
	case err != nil:
		return nil, fmt.Errorf("look up coupling code: %w", err)
	case c.revoked:
		return nil, httputil.Forbidden("this coupling code was withdrawn by the practice")
	case c.expires != 0 && s.now().UnixMilli() >= c.expires:
		return nil, httputil.Forbidden("this coupling code has expired; ask the practice for a new one")
	case c.kind == CodePatient && c.uses > 0:
		return nil, httputil.Forbidden("this coupling code was already used; ask the practice for a new one")
	}
	return &c, nil
}

// claimCode takes one use of a usable code inside tx; the conditional
// update keeps two patients racing for a one-time code from both getting
// it.
func (s *Service) claimCode(ctx context.Context, tx *storage.DB, codeHash string) (*codeRow, error) {
	c, err := s.usableCode(ctx, tx, codeHash)
	if err != nil {
		return nil, err
	}
	res, err := tx.Exec(ctx, `UPDATE care_codes SET uses = uses + 1 WHERE code_hash = $1 AND (kind = 'practice' OR uses = 0)`, codeHash)
	if err != nil {
		return nil, fmt.Errorf("use coupling code: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, httputil.Forbidden("this coupling code was already used; ask the practice for a new one")
	}
	return c, nil
}

// releaseCode gives back a use taken by claimCode when the patient did
// not get a room after all.
func (s *Service) releaseCode(ctx context.Context, codeHash, codeID string) {
	if _, err := s.db.Exec(ctx, `UPDATE care_codes SET uses = uses - 1 WHERE code_hash = $1 AND uses > 0`, codeHash); err != nil {
		slog.WarnContext(ctx, "release coupling code", "code_id", codeID, "err", err)
	}
}

// Redeem couples a patient with the code's practice: a fresh encrypted
// room between the patient and the practice (never shared by two
// patients), on-duty staff invited so that the patient's first messages
// are encrypted to their devices, the patient joined, and a request on
// the practice's board. It returns the room ID.
func (s *Service) Redeem(ctx context.Context, userID, code string) (string, error) {
	return s.redeem(ctx, userID, hashCode(code))
}

func (s *Service) redeem(ctx context.Context, userID, codeHash string) (string, error) {
	acc, err := s.users.Account(ctx, userID)
	if err != nil {
		return "", wrap(err, "account of %s", userID)
	}
	switch acc.Kind {
	case KindStaff, KindService:
		return "", httputil.Forbidden("staff and practice accounts cannot couple as patients")
	}
	// Claim the code first, so that two patients racing for one
	// single-use code cannot both get a room.
	var practiceID, kind, codeID string
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		c, err := s.claimCode(ctx, tx, codeHash)
		if err != nil {
			return err
		}
		practiceID, kind, codeID = c.practiceID, c.kind, c.codeID
		if s.enforce && acc.Kind == KindUser && !acc.IsAdmin {
			// a self-registered account that couples is a patient
			if _, err := tx.Exec(ctx, `UPDATE accounts SET kind = $1 WHERE user_id = $2`, KindPatient, userID); err != nil {
				return fmt.Errorf("mark %s as patient: %w", userID, err)
			}
		}
		return nil
	})
	var he *httputil.Error
	if errors.As(err, &he) && he.Status == http.StatusForbidden {
		// Joining again a room one is in changes nothing: the patient who
		// redeemed a code that is used up (or withdrawn or expired since)
		// opens the link again and lands in their room.
		if roomID, rerr := s.redeemedBy(ctx, codeHash, userID); rerr != nil || roomID != "" {
			return roomID, rerr
		}
	}
	if err != nil {
		return "", err
	}
	release := func() { s.releaseCode(ctx, codeHash, codeID) }
	// Already coupled with this practice: the existing room, not a second
	// one. A one-time code verifies an unverified coupling (the patient
	// scanned the flyer at home, then got a code at the desk).
	existing, err := s.activeCoupling(ctx, userID, practiceID)
	if err != nil {
		release()
		return "", err
	}
	if existing != nil {
		if kind == CodePatient && !existing.Verified {
			if err := s.markVerified(ctx, existing, userID, map[string]any{"code_id": codeID}); err != nil {
				return "", err
			}
		} else {
			release()
		}
		return existing.RoomID, nil
	}
	roomID, err := s.createCouplingRoom(ctx, userID, practiceID, kind, codeID)
	if err != nil {
		release() // the patient did not get a room
		return "", err
	}
	return roomID, nil
}

// redeemedBy returns the coupling room a patient got with a code and is
// still joined to; "" when there is none.
func (s *Service) redeemedBy(ctx context.Context, codeHash, patient string) (string, error) {
	rows, err := s.db.Query(ctx, `SELECT cp.room_id FROM care_couplings cp JOIN care_codes c ON c.code_id = cp.code_id
		WHERE c.code_hash = $1 AND cp.patient = $2 AND cp.ended_ts = 0 ORDER BY cp.created_ts`, codeHash, patient)
	if err != nil {
		return "", fmt.Errorf("couplings of a code: %w", err)
	}
	var rooms []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return "", err
		}
		rooms = append(rooms, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	for _, r := range rooms {
		if m, err := s.rooms.Membership(ctx, r, patient); err == nil && m == "join" {
			return r, nil
		}
	}
	return "", nil
}

// activeCoupling returns the patient's coupling with a practice whose room
// they are still in; nil when there is none.
func (s *Service) activeCoupling(ctx context.Context, patient, practiceID string) (*Coupling, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM care_couplings WHERE patient = $1 AND practice_id = $2 AND ended_ts = 0 ORDER BY created_ts`, patient, practiceID)
	if err != nil {
		return nil, fmt.Errorf("couplings of %s: %w", patient, err)
	}
	var rooms []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			rows.Close()
			return nil, err
		}
		rooms = append(rooms, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, r := range rooms {
		if m, err := s.rooms.Membership(ctx, r, patient); err == nil && m == "join" {
			return s.CouplingOf(ctx, r)
		}
	}
	return nil, nil
}

func (s *Service) createCouplingRoom(ctx context.Context, patient, practiceID, kind, codeID string) (string, error) {
	p, err := s.Practice(ctx, practiceID)
	if err != nil {
		return "", err
	}
	staff, err := s.practiceStaff(ctx, practiceID, true)
	if err != nil {
		return "", err
	}
	c := &Coupling{PracticeID: practiceID, Patient: patient, Verified: kind == CodePatient, Method: kind + "_code", CreatedTS: s.now().UnixMilli()}
	if c.Verified {
		c.VerifiedTS = c.CreatedTS
	}
	// The service account owns the room (100); staff moderate (50); the
	// coupling state is the service account's alone, so neither patients
	// nor staff can forge "verified".
	plUsers := map[string]int{p.ServiceUser: 100}
	for _, u := range staff {
		plUsers[u] = 50
	}
	pl, _ := json.Marshal(map[string]any{
		"users": plUsers,
		"events": map[string]int{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.canonical_alias": 100,
			"m.room.avatar": 50, "m.room.tombstone": 100, "m.room.server_acl": 100, "m.room.encryption": 100,
			"m.room.join_rules": 100, CouplingEvent: 100,
		},
		"invite": 50,
	})
	invite := append([]string{patient}, staff...)
	name := p.Name
	ctx = serverActs(ctx)
	res, err := s.rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator: p.ServiceUser, Preset: roomserver.PresetPrivateChat, Name: &name, Invite: invite, IsDirect: true,
		InitialState: []roomserver.StateEvent{
			// invited staff see (and get the keys of) the patient's
			// first messages, sent before anyone claimed the request
			{Type: "m.room.history_visibility", Content: json.RawMessage(`{"history_visibility":"invited"}`)},
			{Type: "m.room.encryption", Content: json.RawMessage(`{"algorithm":"m.megolm.v1.aes-sha2"}`)},
			{Type: CouplingEvent, Content: couplingContent(c)},
		},
		PowerLevelContentOverride: pl,
	})
	if err != nil {
		return "", fmt.Errorf("create coupling room: %w", err)
	}
	c.RoomID = res.RoomID
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if _, err := tx.Exec(ctx, `INSERT INTO care_couplings (room_id, practice_id, patient, verified, method, code_id, created_ts, verified_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			c.RoomID, practiceID, patient, c.Verified, c.Method, codeID, c.CreatedTS, c.VerifiedTS); err != nil {
			return fmt.Errorf("record coupling: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO care_requests (room_id, practice_id, status, created_ts) VALUES ($1, $2, 'open', $3)`,
			c.RoomID, practiceID, c.CreatedTS); err != nil {
			return fmt.Errorf("record request: %w", err)
		}
		return s.audit(ctx, tx, AuditRecord{Actor: patient, Action: "coupling.redeem", Target: c.RoomID, Practice: practiceID,
			Params: map[string]any{"code_id": codeID, "method": c.Method}})
	})
	if err != nil {
		return "", err
	}
	if _, err := s.rooms.Join(ctx, patient, c.RoomID, ""); err != nil {
		return "", fmt.Errorf("join patient to coupling room: %w", err)
	}
	s.postRequest(ctx, c.RoomID)
	slog.InfoContext(ctx, "coupled", "room_id", c.RoomID, "practice", practiceID, "verified", c.Verified)
	return c.RoomID, nil
}

// CouplingOf returns the coupling of a room; nil when it is none.
func (s *Service) CouplingOf(ctx context.Context, roomID string) (*Coupling, error) {
	return s.couplingOf(ctx, s.db, roomID)
}

func (s *Service) couplingOf(ctx context.Context, db *storage.DB, roomID string) (*Coupling, error) {
	var c Coupling
	err := db.QueryRow(ctx, `SELECT room_id, practice_id, patient, verified, method, created_ts, verified_ts, verified_by, ended_ts FROM care_couplings WHERE room_id = $1`, roomID).
		Scan(&c.RoomID, &c.PracticeID, &c.Patient, &c.Verified, &c.Method, &c.CreatedTS, &c.VerifiedTS, &c.VerifiedBy, &c.EndedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read coupling %s: %w", roomID, err)
	}
	return &c, nil
}

// Couplings lists a patient's couplings, or a practice's when patient is "".
func (s *Service) Couplings(ctx context.Context, practiceID, patient string) ([]Coupling, error) {
	q := `SELECT room_id, practice_id, patient, verified, method, created_ts, verified_ts, verified_by, ended_ts FROM care_couplings WHERE `
	arg := practiceID
	if patient != "" {
		q, arg = q+`patient = $1`, patient
	} else {
		q += `practice_id = $1`
	}
	rows, err := s.db.Query(ctx, q+` ORDER BY created_ts, room_id`, arg)
	if err != nil {
		return nil, fmt.Errorf("list couplings: %w", err)
	}
	defer rows.Close()
	out := []Coupling{}
	for rows.Next() {
		var c Coupling
		if err := rows.Scan(&c.RoomID, &c.PracticeID, &c.Patient, &c.Verified, &c.Method, &c.CreatedTS, &c.VerifiedTS, &c.VerifiedBy, &c.EndedTS); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Verify marks a coupling verified after staff confirmed the patient in
// person. Only staff of the coupled practice may; it is audited and the
// room's coupling state follows.
func (s *Service) Verify(ctx context.Context, staffUser, roomID string) (*Coupling, error) {
	st, err := s.StaffOf(ctx, staffUser)
	if err != nil {
		return nil, err
	}
	c, err := s.CouplingOf(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, httputil.NotFound("no coupling room " + roomID)
	}
	if st == nil || st.PracticeID != c.PracticeID {
		return nil, httputil.Forbidden("only staff of the coupled practice can verify a coupling")
	}
	if c.Verified {
		return c, nil
	}
	if err := s.markVerified(ctx, c, staffUser, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// markVerified records a coupling as verified by actor (audited) and
// updates the room's coupling state.
func (s *Service) markVerified(ctx context.Context, c *Coupling, actor string, params map[string]any) error {
	c.Verified, c.VerifiedTS, c.VerifiedBy = true, s.now().UnixMilli(), actor
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `UPDATE care_couplings SET verified = TRUE, verified_ts = $1, verified_by = $2 WHERE room_id = $3 AND verified = FALSE`,
			c.VerifiedTS, actor, c.RoomID)
		if err != nil {
			return fmt.Errorf("verify coupling: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // verified meanwhile
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "coupling.verify", Target: c.RoomID, Practice: c.PracticeID, Params: params})
	})
	if err != nil {
		return err
	}
	p, err := s.Practice(ctx, c.PracticeID)
	if err != nil {
		return err
	}
	empty := ""
	if _, err := s.rooms.Send(ctx, roomserver.SendRequest{RoomID: c.RoomID, Sender: p.ServiceUser, Type: CouplingEvent, StateKey: &empty, Content: couplingContent(c)}); err != nil {
		return fmt.Errorf("update coupling state: %w", err)
	}
	return nil
}

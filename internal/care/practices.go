package care

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
	"praxis/internal/users"
	"praxis/roomserver"
)

// Practice is a practice's profile. No field is health data.
type Practice struct {
	ID             string `json:"practice_id"`
	Name           string `json:"name"`
	Address        string `json:"address"`
	Phone          string `json:"phone"`
	EmergencyPhone string `json:"emergency_phone"`
	BSNR           string `json:"bsnr"`
	LogoURL        string `json:"logo_url"`
	// ServiceUser is the practice's inbox identity (@praxis-<id>:server).
	ServiceUser string `json:"service_user"`
	// BoardRoom is the staff-only request board.
	BoardRoom    string `json:"board_room"`
	OpeningHours Hours  `json:"opening_hours"`
	Timezone     string `json:"timezone"`
	CreatedTS    int64  `json:"created_ts"`
}

// PracticeUpdate changes the fields that are non-nil.
type PracticeUpdate struct {
	Name           *string `json:"name"`
	Address        *string `json:"address"`
	Phone          *string `json:"phone"`
	EmergencyPhone *string `json:"emergency_phone"`
	BSNR           *string `json:"bsnr"`
	LogoURL        *string `json:"logo_url"`
	OpeningHours   *Hours  `json:"opening_hours"`
	Timezone       *string `json:"timezone"`
}

// validPracticeID: 2–32 of a-z 0-9 -, so that the service account's
// localpart and aliases stay valid and readable.
func validPracticeID(id string) error {
	if len(id) < 2 || len(id) > 32 {
		return httputil.InvalidParam("practice ID must be 2 to 32 characters")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return httputil.InvalidParam("practice ID may only contain a-z, 0-9 and '-'")
		}
	}
	return nil
}

func (u *PracticeUpdate) validate() error {
	if u.Name != nil && strings.TrimSpace(*u.Name) == "" {
		return httputil.InvalidParam("name must not be empty")
	}
	for name, v := range map[string]*string{"name": u.Name, "address": u.Address, "phone": u.Phone, "emergency_phone": u.EmergencyPhone, "bsnr": u.BSNR, "logo_url": u.LogoURL} {
		if v != nil && len(*v) > 500 {
			return httputil.InvalidParam(name + " is too long")
		}
	}
	if u.LogoURL != nil && *u.LogoURL != "" && !strings.HasPrefix(*u.LogoURL, "mxc://") {
		return httputil.InvalidParam("logo_url must be an mxc:// URI")
	}
	if u.Timezone != nil {
		if _, err := time.LoadLocation(*u.Timezone); err != nil || *u.Timezone == "" {
			return httputil.InvalidParam("unknown timezone " + *u.Timezone)
		}
	}
	if u.OpeningHours != nil {
		if err := u.OpeningHours.Validate(); err != nil {
			return httputil.InvalidParam(err.Error())
		}
	}
	return nil
}

// ServiceLocalpart is the localpart of a practice's service account.
func ServiceLocalpart(practiceID string) string { return "praxis-" + practiceID }

// CreatePractice creates a practice, its service account and its request
// board room. actor is audited.
func (s *Service) CreatePractice(ctx context.Context, actor, id string, p PracticeUpdate) (*Practice, error) {
	if err := validPracticeID(id); err != nil {
		return nil, err
	}
	if p.Name == nil {
		return nil, httputil.MissingParam("name is required")
	}
	if p.Timezone == nil {
		tz := "Europe/Berlin"
		p.Timezone = &tz
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	service := s.userID(ServiceLocalpart(id))
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		// no password: nobody logs in as the practice, the server acts for it
		if _, err := s.users.WithTx(tx).CreateAccount(ctx, ServiceLocalpart(id), "", false, KindService); err != nil {
			if errors.Is(err, users.ErrUserInUse) {
				return httputil.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "practice %s or its service account %s already exists", id, service)
			}
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO care_practices (practice_id, name, service_user, timezone, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			id, *p.Name, service, *p.Timezone, s.now().UnixMilli()); err != nil {
			if storage.IsUniqueViolation(err) {
				return httputil.Errorf(http.StatusBadRequest, "M_USER_IN_USE", "practice %s already exists", id)
			}
			return fmt.Errorf("insert practice %s: %w", id, err)
		}
		if err := s.updatePractice(ctx, tx, id, p); err != nil {
			return err
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "practice.create", Target: id, Practice: id, Params: map[string]any{"name": *p.Name}})
	})
	if err != nil {
		return nil, err
	}
	if _, err := s.users.SetDisplayName(ctx, service, *p.Name); err != nil {
		return nil, err
	}
	if p.LogoURL != nil && *p.LogoURL != "" {
		if _, err := s.users.SetAvatarURL(ctx, service, *p.LogoURL); err != nil {
			return nil, err
		}
	}
	if _, err := s.ensureBoard(ctx, id); err != nil {
		return nil, err
	}
	return s.Practice(ctx, id)
}

// updatePractice writes the non-nil fields of u.
func (s *Service) updatePractice(ctx context.Context, tx *storage.DB, id string, u PracticeUpdate) error {
	cols := []struct {
		col string
		v   *string
	}{{"name", u.Name}, {"address", u.Address}, {"phone", u.Phone}, {"emergency_phone", u.EmergencyPhone}, {"bsnr", u.BSNR}, {"logo_url", u.LogoURL}, {"timezone", u.Timezone}}
	for _, c := range cols {
		if c.v == nil {
			continue
		}
		// c.col is one of the constants above
		if _, err := tx.Exec(ctx, `UPDATE care_practices SET `+c.col+` = $1 WHERE practice_id = $2`, *c.v, id); err != nil {
			return fmt.Errorf("update practice %s: %w", id, err)
		}
	}
	if u.OpeningHours != nil {
		b, _ := json.Marshal(u.OpeningHours)
		if _, err := tx.Exec(ctx, `UPDATE care_practices SET opening_hours = $1 WHERE practice_id = $2`, string(b), id); err != nil {
			return fmt.Errorf("update opening hours of %s: %w", id, err)
		}
	}
	return nil
}

// UpdatePractice changes a practice's profile; the service account's
// display name and avatar follow name and logo.
func (s *Service) UpdatePractice(ctx context.Context, actor, id string, u PracticeUpdate) (*Practice, error) {
	if err := u.validate(); err != nil {
		return nil, err
	}
	p, err := s.Practice(ctx, id)
	if err != nil {
		return nil, err
	}
	changed := map[string]any{}
	for name, v := range map[string]any{"name": u.Name, "address": u.Address, "phone": u.Phone, "emergency_phone": u.EmergencyPhone, "bsnr": u.BSNR, "logo_url": u.LogoURL, "timezone": u.Timezone, "opening_hours": u.OpeningHours} {
		switch x := v.(type) {
		case *string:
			if x != nil {
				changed[name] = *x
			}
		case *Hours:
			if x != nil {
				changed[name] = *x
			}
		}
	}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		if err := s.updatePractice(ctx, tx, id, u); err != nil {
			return err
		}
		return s.audit(ctx, tx, AuditRecord{Actor: actor, Action: "practice.update", Target: id, Practice: id, Params: changed})
	})
	if err != nil {
		return nil, err
	}
	if u.Name != nil && *u.Name != p.Name {
		if _, err := s.users.SetDisplayName(ctx, p.ServiceUser, *u.Name); err != nil {
			return nil, err
		}
	}
	if u.LogoURL != nil && *u.LogoURL != p.LogoURL {
		if _, err := s.users.SetAvatarURL(ctx, p.ServiceUser, *u.LogoURL); err != nil {
			return nil, err
		}
	}
	if (u.Name != nil && *u.Name != p.Name) || (u.LogoURL != nil && *u.LogoURL != p.LogoURL) {
		// patients see the practice by its service account's member event
		prof, err := s.users.Profile(ctx, p.ServiceUser)
		if err != nil {
			return nil, err
		}
		if err := s.rooms.PropagateProfile(ctx, p.ServiceUser, prof.DisplayName, prof.AvatarURL); err != nil {
			slog.WarnContext(ctx, "propagate practice profile", "practice", id, "err", err)
		}
	}
	return s.Practice(ctx, id)
}

const practiceColumns = `practice_id, name, address, phone, emergency_phone, bsnr, logo_url, service_user, board_room, opening_hours, timezone, created_ts`

func scanPractice(row interface{ Scan(...any) error }) (*Practice, error) {
	var p Practice
	var hours string
	if err := row.Scan(&p.ID, &p.Name, &p.Address, &p.Phone, &p.EmergencyPhone, &p.BSNR, &p.LogoURL, &p.ServiceUser, &p.BoardRoom, &hours, &p.Timezone, &p.CreatedTS); err != nil {
		return nil, err
	}
	if hours != "" {
		if err := json.Unmarshal([]byte(hours), &p.OpeningHours); err != nil {
			return nil, fmt.Errorf("opening hours of %s: %w", p.ID, err)
		}
	}
	return &p, nil
}

// Practice returns one practice; 404 M_NOT_FOUND if there is none.
func (s *Service) Practice(ctx context.Context, id string) (*Practice, error) {
	return s.practice(ctx, s.db, id)
}

func (s *Service) practice(ctx context.Context, db *storage.DB, id string) (*Practice, error) {
	p, err := scanPractice(db.QueryRow(ctx, `SELECT `+practiceColumns+` FROM care_practices WHERE practice_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, httputil.NotFound("no practice " + id)
	}
	if err != nil {
		return nil, fmt.Errorf("read practice %s: %w", id, err)
	}
	return p, nil
}

// Practices lists every practice of the node.
func (s *Service) Practices(ctx context.Context) ([]Practice, error) {
	rows, err := s.db.Query(ctx, `SELECT `+practiceColumns+` FROM care_practices ORDER BY practice_id`)
	if err != nil {
		return nil, fmt.Errorf("list practices: %w", err)
	}
	defer rows.Close()
	out := []Practice{}
	for rows.Next() {
		p, err := scanPractice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, rows.Err()
}

// ensureBoard creates the practice's request board room if it has none.
// Staff are invited into it when they are added.
func (s *Service) ensureBoard(ctx context.Context, id string) (string, error) {
	p, err := s.Practice(ctx, id)
	if err != nil || p.BoardRoom != "" {
		return p.BoardRoomOrEmpty(), err
	}
	name := p.Name + " – Anfragen"
	res, err := s.rooms.CreateRoom(serverActs(ctx), roomserver.CreateRoomRequest{
		Creator: p.ServiceUser, Preset: roomserver.PresetPrivateChat, Name: &name,
		// the board holds unencrypted routing state only; staff-only
		// through invites, never public
		PowerLevelContentOverride: json.RawMessage(`{"events_default": 0, "state_default": 100, "invite": 100, "kick": 100}`),
	})
	if err != nil {
		return "", fmt.Errorf("create board room of %s: %w", id, err)
	}
	if _, err := s.db.Exec(ctx, `UPDATE care_practices SET board_room = $1 WHERE practice_id = $2 AND board_room = ''`, res.RoomID, id); err != nil {
		return "", fmt.Errorf("record board room of %s: %w", id, err)
	}
	slog.InfoContext(ctx, "request board created", "practice", id, "room_id", res.RoomID)
	return res.RoomID, nil
}

// BoardRoomOrEmpty is nil-safe access to the board room.
func (p *Practice) BoardRoomOrEmpty() string {
	if p == nil {
		return ""
	}
	return p.BoardRoom
}

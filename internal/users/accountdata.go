package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"praxis/internal/storage"
)

// AccountDataEntry is one piece of account data as /sync delivers it.
// RoomID is empty for global account data.
type AccountDataEntry struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PushRulesType is the account data type under which /sync carries a
// user's push rules.
const PushRulesType = "m.push_rules"

// SetAccountData stores content (a JSON object) as userID's account data of
// dataType, global when roomID is empty, and wakes the user's /sync.
func (s *Service) SetAccountData(ctx context.Context, userID, roomID, dataType string, content json.RawMessage) error {
	if !json.Valid(content) || len(content) == 0 || content[0] != '{' {
		return fmt.Errorf("%w: account data content must be a JSON object", ErrInvalid)
	}
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		return s.putAccountData(ctx, tx, userID, roomID, dataType, content)
	})
}

// putAccountData writes one entry at a fresh stream position. The stream
// position is taken right before the write that carries it: from there on
// the stream row lock orders committers.
func (s *Service) putAccountData(ctx context.Context, tx *storage.DB, userID, roomID, dataType string, content json.RawMessage) error {
	pos, err := tx.NextStreamPos(ctx, 1)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = $4, stream_pos = $5`,
		userID, roomID, dataType, string(content), pos)
	if err != nil {
		return fmt.Errorf("store account data %s of %s: %w", dataType, userID, err)
	}
	s.publishAfterCommit(tx, pos)
	return nil
}

func (s *Service) publishAfterCommit(tx *storage.DB, pos int64) {
	if n := s.notifier; n != nil {
		tx.AfterCommit(func() { n.Publish(pos) })
	}
}

// UpdateAccountData applies fn to the current content (nil when there is
// none) under a row lock and stores the result, so concurrent updates of
// one entry (room tags) do not lose each other's changes.
func (s *Service) UpdateAccountData(ctx context.Context, userID, roomID, dataType string, fn func(old json.RawMessage) (json.RawMessage, error)) error {
	return s.db.Transact(ctx, func(tx *storage.DB) error {
		// Make sure a row exists (a placeholder with empty content that
		// this transaction overwrites below, so nobody ever sees it), then
		// lock it with an UPDATE that changes nothing: two first-time
		// writers serialise on the unique key, later ones on the row
		// lock, on both engines.
		if _, err := tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, '', 0)
			ON CONFLICT (user_id, room_id, type) DO NOTHING`, userID, roomID, dataType); err != nil {
			return fmt.Errorf("prepare account data: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE account_data SET stream_pos = stream_pos WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, dataType); err != nil {
			return fmt.Errorf("lock account data: %w", err)
		}
		var c string
		if err := tx.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, dataType).Scan(&c); err != nil {
			return fmt.Errorf("read account data: %w", err)
		}
		var old json.RawMessage
		if c != "" {
			old = json.RawMessage(c)
		}
		content, err := fn(old)
		if err != nil {
			return err
		}
		return s.putAccountData(ctx, tx, userID, roomID, dataType, content)
	})
}

// AccountData returns one entry; ErrNotFound when there is none.
func (s *Service) AccountData(ctx context.Context, userID, roomID, dataType string) (json.RawMessage, error) {
	var c string
	err := s.db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`, userID, roomID, dataType).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) {
		if roomID == "" && dataType == PushRulesType {
			return s.pushRulesJSON(ctx, s.db, userID)
		}
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read account data %s of %s: %w", dataType, userID, err)
	}
	if roomID == "" && dataType == PushRulesType {
		return s.pushRulesJSON(ctx, s.db, userID)
	}
	return json.RawMessage(c), nil
}

// AccountDataSince returns the newest version of every entry of userID
// written after stream position since (0 = all), in stream order. With
// since 0 it includes the push rules even if the user never changed them,
// so an initial /sync always carries m.push_rules.
func (s *Service) AccountDataSince(ctx context.Context, userID string, since int64) ([]AccountDataEntry, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data WHERE user_id = $1 AND stream_pos > $2 ORDER BY stream_pos`, userID, since)
	if err != nil {
		return nil, fmt.Errorf("read account data of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []AccountDataEntry
	for rows.Next() {
		var e AccountDataEntry
		var c string
		if err := rows.Scan(&e.RoomID, &e.Type, &c, &e.StreamPos); err != nil {
			return nil, fmt.Errorf("read account data of %s: %w", userID, err)
		}
		e.Content = json.RawMessage(c)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	// The stored m.push_rules row marks when the rules changed; its content
	// is rendered afresh so that new server-default rules reach clients
	// without every user touching their rules first.
	pushRulesAt := -1
	for i, e := range out {
		if e.RoomID == "" && e.Type == PushRulesType {
			pushRulesAt = i
		}
	}
	if pushRulesAt >= 0 || since == 0 {
		rules, err := s.pushRulesJSON(ctx, s.db, userID)
		if err != nil {
			return nil, err
		}
		if pushRulesAt >= 0 {
			out[pushRulesAt].Content = rules
		} else {
			out = append([]AccountDataEntry{{Type: PushRulesType, Content: rules}}, out...)
		}
	}
	return out, nil
}

// CreateFilter stores a filter (already validated JSON) and returns its ID.
func (s *Service) CreateFilter(ctx context.Context, userID string, filter json.RawMessage) (string, error) {
	var id int64
	err := s.db.QueryRowWrite(ctx, `INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`, userID, string(filter)).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("store filter of %s: %w", userID, err)
	}
	return strconv.FormatInt(id, 10), nil
}

// Filter returns a stored filter of userID; ErrNotFound when userID has
// no filter with that ID.
func (s *Service) Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, ErrNotFound
	}
	var f string
	err = s.db.QueryRow(ctx, `SELECT filter FROM filters WHERE filter_id = $1 AND user_id = $2`, id, userID).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read filter %s of %s: %w", filterID, userID, err)
	}
	return json.RawMessage(f), nil
}

// IgnoredUsers returns the users userID ignores (m.ignored_user_list),
// whose events and invites the server must not show them; nil when none.
func (s *Service) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := s.AccountData(ctx, userID, "", "m.ignored_user_list")
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &list) != nil || len(list.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(list.IgnoredUsers))
	for u := range list.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

package admin

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// AuditLog is the append-only, hash-chained record of admin actions.
//
// Each row stores hash = SHA-256(prev_hash "\n" content), where content is
// a fixed JSON array of the row's columns. Editing a row changes its
// content, deleting one leaves a gap in seq and a broken prev_hash link,
// and truncating the tail no longer matches audit_head. An attacker with
// write access to the whole database can of course rewrite the entire
// chain; the chain makes silent, partial tampering detectable, and the
// head hash can be copied elsewhere (praxisctl audit verify prints it) to
// pin the past.
type AuditLog struct {
	db  *storage.DB
	now func() time.Time
}

// NewAuditLog returns the audit log stored in db.
func NewAuditLog(db *storage.DB) *AuditLog {
	return &AuditLog{db: db, now: time.Now}
}

// Record is one admin action to be audited. Params must never carry
// secrets (passwords, tokens, MACs): the audit log is readable by every
// admin and kept forever.
type Record struct {
	Actor    string
	Action   string
	Target   string
	Params   map[string]any
	Result   string // "ok" when empty
	Practice string
}

// Entry is a stored audit row.
type Entry struct {
	Seq       int64           `json:"seq"`
	TS        int64           `json:"ts"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	Params    json.RawMessage `json:"params"`
	Result    string          `json:"result"`
	RequestID string          `json:"request_id,omitempty"`
	Practice  string          `json:"practice,omitempty"`
	PrevHash  string          `json:"prev_hash"`
	Hash      string          `json:"hash"`
}

// content is what the hash covers besides the previous hash: every column
// but the hashes, in a fixed order, as a JSON array (strings and integers
// have exactly one encoding under encoding/json, so the bytes are stable).
func (e *Entry) content() []byte {
	b, err := json.Marshal([]any{e.Seq, e.TS, e.Actor, e.Action, e.Target, string(e.Params), e.Result, e.RequestID, e.Practice})
	if err != nil {
		panic("audit: marshal content: " + err.Error()) // only strings and integers: cannot fail
	}
	return b
}

func chainHash(prev string, content []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

// Append writes r as the next row of the chain. Called with a transaction
// it joins it, so the audit row commits or rolls back with the action it
// records. It takes audit_head's row lock: call it late in the
// transaction (but before NextStreamPos), as it serialises appenders.
func (l *AuditLog) Append(ctx context.Context, db *storage.DB, r Record) (*Entry, error) {
	if db == nil {
		db = l.db
	}
	params := []byte("{}")
	if len(r.Params) > 0 {
		var err error
		// json.Marshal sorts map keys, so equal params give equal bytes.
		if params, err = json.Marshal(r.Params); err != nil {
			return nil, fmt.Errorf("audit %s: encode params: %w", r.Action, err)
		}
	}
	if r.Result == "" {
		r.Result = "ok"
	}
	e := &Entry{
		TS: l.now().UnixMilli(), Actor: r.Actor, Action: r.Action, Target: r.Target, Params: params,
		Result: r.Result, RequestID: httputil.RequestID(ctx), Practice: r.Practice,
	}
	err := db.Transact(ctx, func(tx *storage.DB) error {
		if err := tx.QueryRow(ctx, `UPDATE audit_head SET seq = seq + 1 RETURNING seq, hash`).Scan(&e.Seq, &e.PrevHash); err != nil {
			return fmt.Errorf("advance audit head: %w", err)
		}
		e.Hash = chainHash(e.PrevHash, e.content())
		if _, err := tx.Exec(ctx, `INSERT INTO audit_log (seq, ts, actor, action, target, params, result, request_id, practice, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			e.Seq, e.TS, e.Actor, e.Action, e.Target, string(e.Params), e.Result, e.RequestID, e.Practice, e.PrevHash, e.Hash); err != nil {
			return fmt.Errorf("insert audit row: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET hash = $1`, e.Hash); err != nil {
			return fmt.Errorf("update audit head: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit %s: %w", r.Action, err)
	}
	return e, nil
}

// AuditQuery selects audit rows.
type AuditQuery struct {
	// From is the seq to start at (inclusive); 0 starts at the first row
	// (or, backwards, at the newest).
	From int64
	// Limit bounds the page (1…1000).
	Limit int
	// Backwards pages from newest to oldest.
	Backwards bool
	// SinceTS and UntilTS bound the timestamp in ms (0 = unbounded).
	SinceTS, UntilTS      int64
	Actor, Action, Target string
	// Practice, when non-nil, restricts to one practice's rows.
	Practice *string
}

// List returns a page of rows and the seq of the next page (0 when this is
// the last one).
func (l *AuditLog) List(ctx context.Context, q AuditQuery) ([]Entry, int64, error) {
	if q.Limit <= 0 || q.Limit > 1000 {
		q.Limit = 100
	}
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args))))
	}
	order := "ASC"
	if q.Backwards {
		order = "DESC"
		if q.From > 0 {
			arg("seq <= ?", q.From)
		}
	} else if q.From > 0 {
		arg("seq >= ?", q.From)
	}
	if q.SinceTS > 0 {
		arg("ts >= ?", q.SinceTS)
	}
	if q.UntilTS > 0 {
		arg("ts <= ?", q.UntilTS)
	}
	if q.Actor != "" {
		arg("actor = ?", q.Actor)
	}
	if q.Action != "" {
		arg("action = ?", q.Action)
	}
	if q.Target != "" {
		arg("target = ?", q.Target)
	}
	if q.Practice != nil {
		arg("practice = ?", *q.Practice)
	}
	query := `SELECT seq, ts, actor, action, target, params, result, request_id, practice, prev_hash, hash FROM audit_log`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, q.Limit+1)
	query += fmt.Sprintf(" ORDER BY seq %s LIMIT $%d", order, len(args))
	rows, err := l.db.Query(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list audit log: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, *e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list audit log: %w", err)
	}
	var next int64
	if len(out) > q.Limit {
		next = out[q.Limit].Seq
		out = out[:q.Limit]
	}
	return out, next, nil
}

func scanEntry(rows *sql.Rows) (*Entry, error) {
	var e Entry
	var params string
	if err := rows.Scan(&e.Seq, &e.TS, &e.Actor, &e.Action, &e.Target, &params, &e.Result, &e.RequestID, &e.Practice, &e.PrevHash, &e.Hash); err != nil {
		return nil, fmt.Errorf("scan audit row: %w", err)
	}
	e.Params = json.RawMessage(params)
	return &e, nil
}

// Verification is the outcome of checking the chain.
type Verification struct {
	OK bool `json:"ok"`
	// Rows is how many rows were checked.
	Rows int64 `json:"rows"`
	// HeadSeq and HeadHash are the chain head as recorded in audit_head;
	// keep HeadHash somewhere else to detect a rewrite of the whole chain.
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
	// BadSeq is the first row that fails (0 when the problem is the head).
	BadSeq  int64  `json:"bad_seq,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// Verify walks the whole chain: seq must count up from 1 without gaps,
// each row must link to its predecessor's hash and hash to its stored
// value, and the last row must match the head.
func (l *AuditLog) Verify(ctx context.Context) (*Verification, error) {
	v := &Verification{}
	// Read the head first, then the rows up to it: an append commits its
	// row and the head together, so every row up to the head is visible
	// and rows appended meanwhile are simply not looked at. No lock is
	// held, so verifying a long log does not stall admin actions.
	if err := l.db.QueryRow(ctx, `SELECT seq, hash FROM audit_head`).Scan(&v.HeadSeq, &v.HeadHash); err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	rows, err := l.db.Query(ctx, `SELECT seq, ts, actor, action, target, params, result, request_id, practice, prev_hash, hash
		FROM audit_log WHERE seq <= $1 ORDER BY seq`, v.HeadSeq)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	prevHash := ""
	var prevSeq int64
	fail := func(seq int64, format string, args ...any) {
		if v.Problem == "" {
			v.BadSeq, v.Problem = seq, fmt.Sprintf(format, args...)
		}
	}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		v.Rows++
		if v.Problem != "" {
			continue // count the rest, report the first problem
		}
		switch {
		case e.Seq != prevSeq+1:
			fail(prevSeq+1, "row %d is missing (next row is %d)", prevSeq+1, e.Seq)
		case e.PrevHash != prevHash:
			fail(e.Seq, "row %d does not link to the hash of row %d", e.Seq, prevSeq)
		case chainHash(e.PrevHash, e.content()) != e.Hash:
			fail(e.Seq, "row %d was modified: its content does not match its hash", e.Seq)
		}
		prevSeq, prevHash = e.Seq, e.Hash
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if v.Problem == "" && (prevSeq != v.HeadSeq || prevHash != v.HeadHash) {
		fail(0, "the log ends at row %d but its head records row %d: rows were removed or the head was altered", prevSeq, v.HeadSeq)
	}
	v.OK = v.Problem == ""
	return v, nil
}

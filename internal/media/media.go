// Package media is the media repository: uploads (plain and asynchronous),
// authenticated downloads, thumbnails, the practice file policy,
// quarantine, deletion and retention.
//
// Bytes live on disk in a content-addressed store (files.go); the database
// holds one row per media ID (table media), one per stored file
// (media_content) and one per generated thumbnail (media_thumbnails). A
// media_content row is the lock that serialises "is this file still
// referenced?" with new uploads of the same bytes, so deleting one media ID
// never removes a file another ID still points at.
package media

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"praxis/internal/config"
	"praxis/internal/httputil"
	"praxis/internal/storage"
)

const (
	// unusedExpiry is how long an ID from POST /create waits for its upload.
	unusedExpiry = 24 * time.Hour
	// maxPending bounds the async IDs one user may hold open at once.
	maxPending = 50
	// accessGranularity throttles last_access_ts writes: a download writes
	// at most once per hour and media ID, so reads stay reads.
	accessGranularity = time.Hour
	// MaxWait caps a download's timeout_ms for a pending async upload.
	MaxWait = 60 * time.Second
	// DefaultWait is the spec's default timeout_ms.
	DefaultWait = 20 * time.Second
)

// Media is the metadata of one media ID.
type Media struct {
	Origin      string
	MediaID     string
	UserID      string
	ContentType string
	UploadName  string
	// ContentHash is "" while an async upload is pending.
	ContentHash     string
	Size            int64
	CreatedTS       int64
	UploadedTS      int64
	UnusedExpiresTS int64
	LastAccessTS    int64
	QuarantinedBy   string
}

// MXC renders the content URI.
func (m *Media) MXC() string { return "mxc://" + m.Origin + "/" + m.MediaID }

// Content is something to send to a client: an original or a thumbnail.
type Content struct {
	Media       *Media // the original's metadata
	ContentType string
	Size        int64
	ModTime     time.Time
	Body        io.ReadSeekCloser
}

// Service is the media repository of one server.
type Service struct {
	db         *storage.DB
	files      *files
	serverName string
	policy     *Policy
	maxUpload  int64
	retention  time.Duration // 0 = keep
	unaccessed time.Duration // 0 = keep
	clock      atomic.Pointer[func() time.Time]

	mu      sync.Mutex
	waiters map[string][]chan struct{} // origin/mediaID → downloads waiting for an async upload

	keyMu    sync.Mutex
	keyLocks map[string]*keyLock
	thumbSem chan struct{} // bounds concurrent thumbnail generation

	deletedByRetention atomic.Int64
	uploads            atomic.Int64
	uploadedBytes      atomic.Int64
	policyRejections   atomic.Int64
	audit              AuditFunc
	keep               KeepFunc
	fetcher            Remote
}

// New builds the repository storing files under root (<data_dir>/media).
func New(db *storage.DB, root, serverName string, cfg config.Media) (*Service, error) {
	f, err := newFiles(root)
	if err != nil {
		return nil, err
	}
	s := &Service{
		db:         db,
		files:      f,
		serverName: serverName,
		policy:     NewPolicy(cfg.AllowedTypes),
		maxUpload:  cfg.MaxUploadBytes,
		retention:  time.Duration(cfg.RetentionDays) * 24 * time.Hour,
		unaccessed: time.Duration(cfg.RetentionUnaccessedDays) * 24 * time.Hour,
		waiters:    map[string][]chan struct{}{},
		keyLocks:   map[string]*keyLock{},
		thumbSem:   make(chan struct{}, max(1, runtime.NumCPU())),
	}
	s.SetClock(time.Now)
	return s, nil
}

// SetClock replaces the clock (tests move time instead of sleeping). It
// may be called while the retention job runs.
func (s *Service) SetClock(now func() time.Time) { s.clock.Store(&now) }

func (s *Service) now() time.Time { return (*s.clock.Load())() }

// MaxUploadBytes is the upload size limit (m.upload.size).
func (s *Service) MaxUploadBytes() int64 { return s.maxUpload }

// Policy is the file policy in force.
func (s *Service) Policy() *Policy { return s.policy }

// DeletedByRetention counts media IDs the retention job deleted since start.
func (s *Service) DeletedByRetention() int64 { return s.deletedByRetention.Load() }

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newMediaID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

// validMediaID accepts the characters the spec allows in a media ID.
func validMediaID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Create reserves a media ID for an asynchronous upload by userID
// (POST /_matrix/media/v1/create).
func (s *Service) Create(ctx context.Context, userID string) (*Media, error) {
	now := s.nowMS()
	var pending int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND content_hash IS NULL AND unused_expires_ts > $2`, userID, now).Scan(&pending); err != nil {
		return nil, fmt.Errorf("count pending uploads of %s: %w", userID, err)
	}
	if pending >= maxPending {
		e := httputil.LimitExceeded(int64(unusedExpiry / time.Millisecond / maxPending))
		e.Message = "too many pending asynchronous uploads; upload or let some expire first"
		return nil, e
	}
	m := &Media{Origin: s.serverName, MediaID: newMediaID(), UserID: userID, CreatedTS: now, UnusedExpiresTS: now + unusedExpiry.Milliseconds()}
	_, err := s.db.Exec(ctx, `INSERT INTO media (origin, media_id, user_id, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4, $5)`,
		m.Origin, m.MediaID, m.UserID, m.CreatedTS, m.UnusedExpiresTS)
	if err != nil {
		return nil, fmt.Errorf("create media ID: %w", err)
	}
	slog.InfoContext(ctx, "media ID reserved", "media_id", m.MediaID, "user_id", userID)
	return m, nil
}

// UploadRequest is one upload.
type UploadRequest struct {
	UserID        string
	ContentType   string // as declared by the client
	FileName      string
	ContentLength int64 // -1 if unknown
	Body          io.Reader
	// MediaID, when set, fills an ID reserved by Create.
	MediaID string
}

// Upload checks the file policy against the first bytes, streams the body
// into the store and records the media ID. A rejected upload stores
// nothing.
func (s *Service) Upload(ctx context.Context, req UploadRequest) (*Media, error) {
	if req.ContentLength > s.maxUpload {
		return nil, httputil.TooLarge(fmt.Sprintf("the file is larger than the %d bytes this server accepts", s.maxUpload))
	}
	if len(req.FileName) > 255 {
		return nil, httputil.InvalidParam("filename is longer than 255 bytes")
	}
	ct := normaliseType(req.ContentType)
	if req.ContentType == "" {
		ct = octetStream
	} else if ct == "" {
		return nil, httputil.InvalidParam("Content-Type is not a valid media type")
	}
	if req.MediaID != "" {
		// Fail before receiving the body when the answer is already known.
		if err := s.checkPending(ctx, req.MediaID, req.UserID); err != nil {
			return nil, err
		}
	}
	br := bufio.NewReaderSize(req.Body, sniffLen)
	head, err := br.Peek(sniffLen)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, httputil.Errorf(http.StatusBadRequest, "M_UNKNOWN", "could not read the upload")
	}
	if err := s.policy.Check(ct, head); err != nil {
		slog.InfoContext(ctx, "upload rejected by file policy", "user_id", req.UserID, "declared_type", ct)
		s.policyRejections.Add(1)
		return nil, err
	}
	t, err := s.files.writeTemp(br, s.maxUpload)
	if errors.Is(err, errTooLarge) {
		return nil, httputil.TooLarge(fmt.Sprintf("the file is larger than the %d bytes this server accepts", s.maxUpload))
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	defer s.files.discard(t) // a no-op once committed (renamed away)

	now := s.nowMS()
	m := &Media{
		Origin: s.serverName, MediaID: req.MediaID, UserID: req.UserID, ContentType: ct, UploadName: req.FileName,
		ContentHash: t.hash, Size: t.size, CreatedTS: now, UploadedTS: now, LastAccessTS: now,
	}
	// The media row is written before the file is moved into place: a
	// lost race for an async ID then leaves nothing behind.
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		var quarantined int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE content_hash = $1 AND quarantined_by IS NOT NULL`, t.hash).Scan(&quarantined); err != nil {
			return fmt.Errorf("check quarantine of content: %w", err)
		}
		if quarantined > 0 {
			slog.InfoContext(ctx, "upload of quarantined content refused", "user_id", req.UserID, "content_hash", t.hash)
			return httputil.Forbidden("this file was taken out of circulation by an administrator")
		}
		if req.MediaID == "" {
			m.MediaID = newMediaID()
			_, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, user_id, content_type, upload_name, content_hash, size, created_ts, uploaded_ts, last_access_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				m.Origin, m.MediaID, m.UserID, m.ContentType, m.UploadName, m.ContentHash, m.Size, m.CreatedTS, m.UploadedTS, m.LastAccessTS)
			if err != nil {
				return fmt.Errorf("record media: %w", err)
			}
			return s.addContent(ctx, tx, t)
		}
		res, err := tx.Exec(ctx, `UPDATE media SET content_type = $1, upload_name = $2, content_hash = $3, size = $4, uploaded_ts = $5, last_access_ts = $5
			WHERE origin = $6 AND media_id = $7 AND user_id = $8 AND content_hash IS NULL AND unused_expires_ts > $5`,
			m.ContentType, m.UploadName, m.ContentHash, m.Size, now, m.Origin, m.MediaID, m.UserID)
		if err != nil {
			return fmt.Errorf("record async upload: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Lost a race with another upload to the same ID (or it expired
			// meanwhile): say which.
			if err := s.checkPendingTx(ctx, tx, req.MediaID, req.UserID); err != nil {
				return err
			}
			return httputil.Errorf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
		}
		if err := s.addContent(ctx, tx, t); err != nil {
			return err
		}
		key := m.Origin + "/" + m.MediaID
		tx.AfterCommit(func() { s.wake(key) })
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.uploads.Add(1)
	s.uploadedBytes.Add(m.Size)
	slog.InfoContext(ctx, "media uploaded", "media_id", m.MediaID, "user_id", m.UserID, "content_type", m.ContentType, "size", m.Size)
	return m, nil
}

// addContent registers t's bytes in media_content, takes that row's lock
// and moves the file into place. The lock is held until tx ends, so a
// concurrent deletion of the same bytes either finished before (and we
// write the file anew) or waits for us (and then sees our reference).
func (s *Service) addContent(ctx context.Context, tx *storage.DB, t *temp) error {
	if _, err := tx.Exec(ctx, `INSERT INTO media_content (content_hash, size, created_ts) VALUES ($1, $2, $3) ON CONFLICT (content_hash) DO NOTHING`,
		t.hash, t.size, s.nowMS()); err != nil {
		return fmt.Errorf("record content: %w", err)
	}
	if err := lockContent(ctx, tx, t.hash); err != nil {
		return err
	}
	return s.files.commit(t)
}

// lockContent locks the media_content row of hash; the no-op UPDATE is
// the portable way to take a row lock (SQLite's write transaction is
// exclusive anyway).
func lockContent(ctx context.Context, tx *storage.DB, hash string) error {
	if _, err := tx.Exec(ctx, `UPDATE media_content SET size = size WHERE content_hash = $1`, hash); err != nil {
		return fmt.Errorf("lock content: %w", err)
	}
	return nil
}

func (s *Service) checkPending(ctx context.Context, mediaID, userID string) error {
	return s.checkPendingTx(ctx, s.db, mediaID, userID)
}

// checkPendingTx explains why userID cannot upload into mediaID, or
// returns nil if it can.
func (s *Service) checkPendingTx(ctx context.Context, db *storage.DB, mediaID, userID string) error {
	m, err := s.get(ctx, db, s.serverName, mediaID)
	if err != nil {
		return err
	}
	switch {
	case m == nil:
		return httputil.NotFound("unknown media ID")
	case m.UserID != userID:
		return httputil.Forbidden("this media ID was created by another user")
	case m.ContentHash != "":
		return httputil.Errorf(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
	case m.UnusedExpiresTS <= s.nowMS():
		return httputil.NotFound("the media ID expired before it was uploaded")
	}
	return nil
}

const mediaColumns = `origin, media_id, user_id, content_type, upload_name, content_hash, size, created_ts, uploaded_ts, unused_expires_ts, last_access_ts, quarantined_by`

func scanMedia(sc interface{ Scan(...any) error }) (*Media, error) {
	var m Media
	var hash, qBy sql.NullString
	if err := sc.Scan(&m.Origin, &m.MediaID, &m.UserID, &m.ContentType, &m.UploadName, &hash, &m.Size, &m.CreatedTS, &m.UploadedTS, &m.UnusedExpiresTS, &m.LastAccessTS, &qBy); err != nil {
		return nil, err
	}
	m.ContentHash, m.QuarantinedBy = hash.String, qBy.String
	return &m, nil
}

// get reads one media row; (nil, nil) when there is none.
func (s *Service) get(ctx context.Context, db *storage.DB, origin, mediaID string) (*Media, error) {
	m, err := scanMedia(db.QueryRow(ctx, `SELECT `+mediaColumns+` FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read media %s/%s: %w", origin, mediaID, err)
	}
	return m, nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Get returns the metadata of a media ID, or nil.
func (s *Service) Get(ctx context.Context, origin, mediaID string) (*Media, error) {
	return s.get(ctx, s.db, origin, mediaID)
}

// resolve finds servable media: it waits up to wait for a pending async
// upload and hides quarantined and unknown media behind the same 404.
func (s *Service) resolve(ctx context.Context, origin, mediaID string, wait time.Duration) (*Media, error) {
	if !validMediaID(mediaID) {
		return nil, httputil.NotFound("media not found")
	}
	if origin != s.serverName {
		return s.remote(ctx, origin, mediaID)
	}
	deadline := time.Now().Add(wait)
	key := origin + "/" + mediaID
	for {
		// Register before reading, so an upload committing in between
		// still wakes us.
		ch := s.subscribe(key)
		m, err := s.get(ctx, s.db, origin, mediaID)
		left := time.Until(deadline)
		pending := err == nil && m != nil && m.QuarantinedBy == "" && m.ContentHash == "" && m.UnusedExpiresTS > s.nowMS()
		if !pending || left <= 0 {
			s.unsubscribe(key, ch)
		}
		switch {
		case err != nil:
			return nil, err
		case m == nil, m.QuarantinedBy != "":
			return nil, httputil.NotFound("media not found")
		case m.ContentHash != "":
			return m, nil
		case !pending:
			return nil, httputil.NotFound("media not found") // expired unused ID
		case left <= 0:
			return nil, notYetUploaded()
		}
		// Another process may complete the upload: poll as well.
		timer := time.NewTimer(min(left, time.Second))
		select {
		case <-ch:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		s.unsubscribe(key, ch)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func notYetUploaded() error {
	return httputil.Errorf(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "the media has not been uploaded yet")
}

func (s *Service) subscribe(key string) chan struct{} {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiters[key] = append(s.waiters[key], ch)
	s.mu.Unlock()
	return ch
}

func (s *Service) unsubscribe(key string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.waiters[key]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.waiters, key)
	} else {
		s.waiters[key] = list
	}
}

func (s *Service) wake(key string) {
	s.mu.Lock()
	list := s.waiters[key]
	delete(s.waiters, key)
	s.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}

// Download opens the original content of a media ID.
func (s *Service) Download(ctx context.Context, origin, mediaID string, wait time.Duration) (*Content, error) {
	m, err := s.resolve(ctx, origin, mediaID, wait)
	if err != nil {
		return nil, err
	}
	f, err := s.files.open(m.ContentHash)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			slog.ErrorContext(ctx, "media content missing on disk", "media_id", m.MediaID, "content_hash", m.ContentHash)
			return nil, httputil.NotFound("media not found")
		}
		return nil, fmt.Errorf("open media %s: %w", m.MediaID, err)
	}
	s.touch(ctx, m)
	return &Content{Media: m, ContentType: m.ContentType, Size: m.Size, ModTime: time.UnixMilli(m.UploadedTS), Body: f}, nil
}

// touch records a download for the unaccessed-media retention rule, at
// most once per accessGranularity.
func (s *Service) touch(ctx context.Context, m *Media) {
	now := s.nowMS()
	if now-m.LastAccessTS < accessGranularity.Milliseconds() {
		return
	}
	if _, err := s.db.Exec(ctx, `UPDATE media SET last_access_ts = $1 WHERE origin = $2 AND media_id = $3`, now, m.Origin, m.MediaID); err != nil {
		slog.WarnContext(ctx, "record media access", "media_id", m.MediaID, "err", err)
	}
}

// Quarantine takes a media ID out of circulation (on) or puts it back;
// by is the admin who asked (audited).
func (s *Service) Quarantine(ctx context.Context, origin, mediaID, by string, on bool) error {
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		var res sql.Result
		var err error
		if on {
			res, err = tx.Exec(ctx, `UPDATE media SET quarantined_by = $1, quarantined_ts = $2 WHERE origin = $3 AND media_id = $4`, by, s.nowMS(), origin, mediaID)
		} else {
			res, err = tx.Exec(ctx, `UPDATE media SET quarantined_by = NULL, quarantined_ts = 0 WHERE origin = $1 AND media_id = $2`, origin, mediaID)
		}
		if err != nil {
			return fmt.Errorf("quarantine media %s: %w", mediaID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return httputil.NotFound("media not found")
		}
		action := "media.quarantine"
		if !on {
			action = "media.unquarantine"
		}
		return s.auditTx(ctx, tx, by, action, "mxc://"+origin+"/"+mediaID, nil)
	})
	if err != nil {
		return err
	}
	slog.InfoContext(ctx, "media quarantine changed", "media_id", mediaID, "origin", origin, "quarantined", on, "by", by)
	return nil
}

// Delete removes a media ID (retention; not audited).
func (s *Service) Delete(ctx context.Context, origin, mediaID string) error {
	return s.DeleteBy(ctx, origin, mediaID, "")
}

// DeleteBy removes a media ID with its thumbnails, and each file no other
// media ID or thumbnail still references. actor is the admin who asked
// (audited), or "" for the system.
func (s *Service) DeleteBy(ctx context.Context, origin, mediaID, actor string) error {
	var restores, purges []func()
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		restores, purges = nil, nil
		// Deleting the media row first locks it against a thumbnail being
		// added concurrently (that writer locks the row too).
		var hash sql.NullString
		err := tx.QueryRow(ctx, `DELETE FROM media WHERE origin = $1 AND media_id = $2 RETURNING content_hash`, origin, mediaID).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return httputil.NotFound("media not found")
		}
		if err != nil {
			return fmt.Errorf("delete media %s: %w", mediaID, err)
		}
		hashes := map[string]bool{}
		if hash.Valid {
			hashes[hash.String] = true
		}
		rows, err := tx.Query(ctx, `SELECT content_hash FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
		if err != nil {
			return fmt.Errorf("read thumbnails of %s: %w", mediaID, err)
		}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return err
			}
			hashes[h] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
			return fmt.Errorf("delete thumbnails of %s: %w", mediaID, err)
		}
		sorted := make([]string, 0, len(hashes))
		for h := range hashes {
			sorted = append(sorted, h)
		}
		sort.Strings(sorted) // one lock order, no deadlocks between deleters
		for _, h := range sorted {
			if err := lockContent(ctx, tx, h); err != nil {
				return err
			}
			var refs int
			if err := tx.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE content_hash = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE content_hash = $1)`, h).Scan(&refs); err != nil {
				return fmt.Errorf("count references to content: %w", err)
			}
			if refs > 0 {
				continue
			}
			if _, err := tx.Exec(ctx, `DELETE FROM media_content WHERE content_hash = $1`, h); err != nil {
				return fmt.Errorf("delete content row: %w", err)
			}
			restore, purge, err := s.files.trash(h)
			if err != nil {
				return err
			}
			restores, purges = append(restores, restore), append(purges, purge)
		}
		return s.auditTx(ctx, tx, actor, "media.delete", "mxc://"+origin+"/"+mediaID, nil)
	})
	if err != nil {
		for _, r := range restores {
			r()
		}
		return err
	}
	for _, p := range purges {
		p()
	}
	slog.InfoContext(ctx, "media deleted", "media_id", mediaID, "origin", origin, "files_removed", len(purges))
	return nil
}

// ListOptions pages through a user's media.
type ListOptions struct {
	From    int
	Limit   int
	OrderBy string // a column of ListColumns
	Reverse bool
}

// ListColumns are the sort keys of UserMedia (Synapse's order_by names).
var ListColumns = map[string]string{
	"media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts",
	"last_access_ts": "last_access_ts", "media_length": "size", "media_type": "content_type",
	"quarantined_by": "quarantined_by",
}

// UserMedia lists the media userID uploaded (pending IDs included) and
// the total count.
func (s *Service) UserMedia(ctx context.Context, userID string, o ListOptions) ([]*Media, int, error) {
	col, ok := ListColumns[o.OrderBy]
	if !ok {
		col = "created_ts"
	}
	dir := "ASC"
	if o.Reverse {
		dir = "DESC"
	}
	var total int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1`, userID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count media of %s: %w", userID, err)
	}
	rows, err := s.db.Query(ctx, `SELECT `+mediaColumns+` FROM media WHERE user_id = $1 ORDER BY `+col+` `+dir+`, media_id `+dir+` LIMIT $2 OFFSET $3`,
		userID, o.Limit, o.From)
	if err != nil {
		return nil, 0, fmt.Errorf("list media of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []*Media{}
	for rows.Next() {
		m, err := scanMedia(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, m)
	}
	return out, total, rows.Err()
}

// Root is where the store keeps its files (for tests and operators).
func (s *Service) Root() string { return s.files.root }

// ContentPath is the on-disk path of a content hash.
func (s *Service) ContentPath(hash string) string { return s.files.path(hash) }

// DefaultRoot is the media directory under a data directory.
func DefaultRoot(dataDir string) string { return filepath.Join(dataDir, "media") }

func isNotFound(err error) bool {
	var e *httputil.Error
	return errors.As(err, &e) && e.ErrCode == "M_NOT_FOUND"
}

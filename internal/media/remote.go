package media

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Remote fetches media of other servers; the federation client implements
// it (GET /_matrix/federation/v1/media/download/{mediaId} on the origin).
type Remote interface {
	// Fetch returns the content of mxc://origin/mediaID, or an error
	// wrapping ErrRemoteNotFound when the origin does not have it.
	Fetch(ctx context.Context, origin, mediaID string) (*RemoteContent, error)
}

// RemoteContent is a remote server's answer; the caller closes Body.
type RemoteContent struct {
	ContentType   string
	FileName      string
	ContentLength int64 // -1 if unknown
	Body          io.ReadCloser
}

// ErrRemoteNotFound is what a Remote returns for media the origin lacks.
var ErrRemoteNotFound = errors.New("remote media not found")

// SetRemote installs the federation media client. Without one, media of
// other servers is unknown here (404).
func (s *Service) SetRemote(r Remote) { s.fetcher = r }

// remote serves media of another server: from the local cache (the media
// table keyed by origin, the bytes content-addressed like ours), else
// fetched once from the origin and cached. Fetched files pass the same
// file policy as uploads and count towards retention like local media.
func (s *Service) remote(ctx context.Context, origin, mediaID string) (*Media, error) {
	m, err := s.get(ctx, s.db, origin, mediaID)
	if err != nil {
		return nil, err
	}
	if m == nil && s.fetcher != nil {
		// One fetch per media ID in this process; the others wait for it.
		unlock := s.lockKey("remote/" + origin + "/" + mediaID)
		defer unlock()
		if m, err = s.get(ctx, s.db, origin, mediaID); err == nil && m == nil {
			m, err = s.fetchRemote(ctx, origin, mediaID)
		}
		if err != nil {
			return nil, err
		}
	}
	if m == nil || m.QuarantinedBy != "" || m.ContentHash == "" {
		return nil, httputil.NotFound("media not found")
	}
	return m, nil
}

func (s *Service) fetchRemote(ctx context.Context, origin, mediaID string) (*Media, error) {
	rc, err := s.fetcher.Fetch(ctx, origin, mediaID)
	if errors.Is(err, ErrRemoteNotFound) {
		return nil, nil
	}
	if err != nil {
		slog.WarnContext(ctx, "fetch remote media", "origin", origin, "media_id", mediaID, "err", err)
		return nil, httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "could not fetch the media from %s", origin)
	}
	defer rc.Body.Close()
	tooLarge := httputil.Errorf(http.StatusBadGateway, "M_TOO_LARGE", "the remote file is larger than the %d bytes this server accepts", s.maxUpload)
	if rc.ContentLength > s.maxUpload {
		return nil, tooLarge
	}
	ct := normaliseType(rc.ContentType)
	if ct == "" {
		ct = octetStream
	}
	br := bufio.NewReaderSize(rc.Body, sniffLen)
	head, err := br.Peek(sniffLen)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "could not fetch the media from %s", origin)
	}
	if err := s.policy.Check(ct, head); err != nil {
		slog.InfoContext(ctx, "remote media rejected by file policy", "origin", origin, "media_id", mediaID, "declared_type", ct)
		s.policyRejections.Add(1)
		return nil, httputil.Errorf(http.StatusBadGateway, "M_UNKNOWN", "the remote file is not accepted by this server's file policy: %s", httputil.ToError(err).Message)
	}
	t, err := s.files.writeTemp(br, s.maxUpload)
	if errors.Is(err, errTooLarge) {
		return nil, tooLarge
	}
	if err != nil {
		return nil, fmt.Errorf("fetch remote media %s/%s: %w", origin, mediaID, err)
	}
	defer s.files.discard(t)
	now := s.nowMS()
	m := &Media{Origin: origin, MediaID: mediaID, ContentType: ct, UploadName: rc.FileName,
		ContentHash: t.hash, Size: t.size, CreatedTS: now, UploadedTS: now, LastAccessTS: now}
	err = s.db.Transact(ctx, func(tx *storage.DB) error {
		res, err := tx.Exec(ctx, `INSERT INTO media (origin, media_id, user_id, content_type, upload_name, content_hash, size, created_ts, uploaded_ts, last_access_ts)
			VALUES ($1, $2, '', $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (origin, media_id) DO NOTHING`,
			m.Origin, m.MediaID, m.ContentType, m.UploadName, m.ContentHash, m.Size, m.CreatedTS, m.UploadedTS, m.LastAccessTS)
		if err != nil {
			return fmt.Errorf("cache remote media: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // another process cached it first
		}
		return s.addContent(ctx, tx, t)
	})
	if err != nil {
		return nil, err
	}
	slog.InfoContext(ctx, "remote media cached", "origin", origin, "media_id", mediaID, "content_type", ct, "size", m.Size)
	return s.get(ctx, s.db, origin, mediaID)
}

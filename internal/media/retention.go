package media

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// retentionBatch bounds how many media IDs one query of the retention job
// picks; each is then deleted in its own short transaction.
const retentionBatch = 200

// KeepFunc reports which of the given content URIs retention must spare:
// media still in use as a profile or room avatar or a practice logo is
// not a medical file and must not vanish with age. The homeserver wires
// it to the services that know (users, rooms).
type KeepFunc func(ctx context.Context, mxcs []string) (map[string]bool, error)

// SetRetentionKeep installs the keep hook; without one, retention spares
// nothing.
func (s *Service) SetRetentionKeep(fn KeepFunc) { s.keep = fn }

func (s *Service) keepers(ctx context.Context, ids [][2]string) (map[string]bool, error) {
	if s.keep == nil || len(ids) == 0 {
		return nil, nil
	}
	mxcs := make([]string, len(ids))
	for i, id := range ids {
		mxcs[i] = mxc(id[0], id[1])
	}
	return s.keep(ctx, mxcs)
}

func mxc(origin, mediaID string) string { return "mxc://" + origin + "/" + mediaID }

// PurgeResult says what one retention pass removed.
type PurgeResult struct {
	ExpiredIDs int // async IDs never uploaded
	Media      int // media past media.retention_days or not downloaded for media.retention_unaccessed_days
	TempFiles  int // leftovers of crashed uploads
}

// Purge runs one retention pass at the service clock's now.
func (s *Service) Purge(ctx context.Context) (PurgeResult, error) {
	var res PurgeResult
	now := s.now()
	r, err := s.db.Exec(ctx, `DELETE FROM media WHERE content_hash IS NULL AND unused_expires_ts <= $1`, now.UnixMilli())
	if err != nil {
		return res, fmt.Errorf("expire unused media IDs: %w", err)
	}
	n, _ := r.RowsAffected()
	res.ExpiredIDs = int(n)

	type rule struct {
		age    time.Duration
		column string
	}
	for _, ru := range []rule{{s.retention, "created_ts"}, {s.unaccessed, "last_access_ts"}} {
		if ru.age <= 0 {
			continue
		}
		cutoff := now.Add(-ru.age).UnixMilli()
		kept := 0 // rows the keep hook spared stay in the result: page past them
		for {
			ids, err := s.olderThan(ctx, ru.column, cutoff, kept)
			if err != nil {
				return res, err
			}
			keep, err := s.keepers(ctx, ids)
			if err != nil {
				return res, fmt.Errorf("retention: ask which media to keep: %w", err)
			}
			for _, id := range ids {
				if keep[mxc(id[0], id[1])] {
					kept++
					continue
				}
				if err := s.Delete(ctx, id[0], id[1]); err != nil {
					if isNotFound(err) {
						continue // deleted concurrently
					}
					return res, fmt.Errorf("retention: %w", err)
				}
				res.Media++
				s.deletedByRetention.Add(1)
			}
			if len(ids) < retentionBatch {
				break
			}
		}
	}
	tf, err := s.files.sweepTemp(now, 24*time.Hour)
	if err != nil {
		return res, err
	}
	res.TempFiles = tf
	return res, nil
}

func (s *Service) olderThan(ctx context.Context, column string, cutoff int64, skip int) ([][2]string, error) {
	// column is one of two constants above, never input.
	rows, err := s.db.Query(ctx, `SELECT origin, media_id FROM media WHERE content_hash IS NOT NULL AND `+column+` < $1 ORDER BY `+column+`, origin, media_id LIMIT $2 OFFSET $3`,
		cutoff, retentionBatch, skip)
	if err != nil {
		return nil, fmt.Errorf("find media for retention: %w", err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var id [2]string
		if err := rows.Scan(&id[0], &id[1]); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// RunRetention runs Purge now and then every interval until ctx ends.
func (s *Service) RunRetention(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Purge(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			slog.ErrorContext(ctx, "media retention failed", "err", err)
		case res.ExpiredIDs+res.Media+res.TempFiles > 0:
			slog.InfoContext(ctx, "media retention", "expired_ids", res.ExpiredIDs, "deleted_media", res.Media, "temp_files", res.TempFiles)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DeleteBefore deletes local media uploaded before beforeTS and larger
// than sizeGT bytes (Synapse's "delete local media by date or size"),
// sparing what the keep hook names when keep is set. actor is the admin
// (each deletion is audited). It returns the deleted media IDs.
func (s *Service) DeleteBefore(ctx context.Context, beforeTS, sizeGT int64, keep bool, actor string) ([]string, error) {
	deleted := []string{}
	skip := 0
	for {
		rows, err := s.db.Query(ctx, `SELECT media_id FROM media WHERE origin = $1 AND content_hash IS NOT NULL AND created_ts < $2 AND size > $3
			ORDER BY created_ts, media_id LIMIT $4 OFFSET $5`, s.serverName, beforeTS, sizeGT, retentionBatch, skip)
		if err != nil {
			return deleted, fmt.Errorf("find media to delete: %w", err)
		}
		var ids [][2]string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return deleted, err
			}
			ids = append(ids, [2]string{s.serverName, id})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return deleted, err
		}
		var spare map[string]bool
		if keep {
			if spare, err = s.keepers(ctx, ids); err != nil {
				return deleted, fmt.Errorf("ask which media to keep: %w", err)
			}
		}
		for _, id := range ids {
			if spare[mxc(id[0], id[1])] {
				skip++
				continue
			}
			if err := s.DeleteBy(ctx, id[0], id[1], actor); err != nil {
				if isNotFound(err) {
					continue
				}
				return deleted, err
			}
			deleted = append(deleted, id[1])
		}
		if len(ids) < retentionBatch {
			return deleted, nil
		}
	}
}

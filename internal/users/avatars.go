package users

import (
	"context"
	"fmt"

	"praxis/internal/storage"
)

// AvatarsInUse reports which of the given mxc:// URIs are some account's
// avatar, so that media retention never deletes a profile picture.
func (s *Service) AvatarsInUse(ctx context.Context, mxcs []string) (map[string]bool, error) {
	used := map[string]bool{}
	if len(mxcs) == 0 {
		return used, nil
	}
	q, args := storage.In(`SELECT DISTINCT avatar_url FROM accounts WHERE avatar_url IN ($IN)`, 0, mxcs)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("avatars in use: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		used[u] = true
	}
	return used, rows.Err()
}

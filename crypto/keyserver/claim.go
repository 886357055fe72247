package keyserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"praxis/internal/storage"
)

// ClaimResponse is the body of a /keys/claim answer.
type ClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]json.RawMessage                       `json:"failures"`
}

// claimOTK deletes and returns one one-time key in a single statement, so
// that two claimers can never both get it: the oldest upload first, by key
// ID within one upload. On Postgres, SKIP LOCKED lets a
// concurrent claimer take the next key instead of finding its chosen row
// gone after waiting for the lock (which would wrongly fall back).
const claimOTK = `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
	SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY uploaded_ts, key_id LIMIT 1%s
) RETURNING key_id, key_json`

// Claim hands out one one-time key per requested device and algorithm,
// or the device's fallback key when none is left (marking it used).
// Each one-time key is handed out at most once.
func (s *Service) Claim(ctx context.Context, req map[string]map[string]string) (*ClaimResponse, error) {
	resp := &ClaimResponse{
		OneTimeKeys: map[string]map[string]map[string]json.RawMessage{},
		Failures:    map[string]json.RawMessage{},
	}
	remote := map[string]map[string]map[string]string{}
	query := fmt.Sprintf(claimOTK, "")
	if s.db.Engine() == storage.Postgres {
		query = fmt.Sprintf(claimOTK, " FOR UPDATE SKIP LOCKED")
	}
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		for userID, devices := range req {
			if !s.isLocal(userID) {
				srv := serverOf(userID)
				if remote[srv] == nil {
					remote[srv] = map[string]map[string]string{}
				}
				remote[srv][userID] = devices
				continue
			}
			for deviceID, alg := range devices {
				var keyID, keyJSON string
				err := tx.QueryRow(ctx, query, userID, deviceID, alg).Scan(&keyID, &keyJSON)
				if errors.Is(err, sql.ErrNoRows) {
					err = tx.QueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 RETURNING key_id, key_json`,
						userID, deviceID, alg).Scan(&keyID, &keyJSON)
				}
				if errors.Is(err, sql.ErrNoRows) {
					continue // no key at all: the device is simply absent from the answer
				}
				if err != nil {
					return fmt.Errorf("claim one-time key for %s: %w", deviceID, err)
				}
				if resp.OneTimeKeys[userID] == nil {
					resp.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
				}
				resp.OneTimeKeys[userID][deviceID] = map[string]json.RawMessage{alg + ":" + keyID: json.RawMessage(keyJSON)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for srv, users := range remote {
		if s.remote == nil {
			resp.Failures[srv] = unreachable
			continue
		}
		keys, err := s.remote.ClaimKeys(ctx, srv, users)
		if err != nil {
			resp.Failures[srv] = unreachable
			continue
		}
		for u, devs := range keys {
			resp.OneTimeKeys[u] = devs
		}
	}
	return resp, nil
}

// unreachable is the failure entry for a server whose keys we could not get.
var unreachable = json.RawMessage(`{"status":503,"message":"not reachable"}`)

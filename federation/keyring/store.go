package keyring

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/storage"
)

// Store is the database-backed cache of other servers' verify keys: the
// KeyDatabase of gomatrixserverlib's KeyRing. The KeyRing itself decides
// whether a cached key was valid when a signature was made (valid_until_ts
// for current keys, expired_ts for retired ones) and asks the fetchers for
// a fresh copy when it was not.
type Store struct {
	db  *storage.DB
	now func() time.Time

	// mem holds keys read or stored by this process. Keys are immutable
	// per (server, key ID) except for their validity, which only grows
	// when we store a newer copy; a stale entry makes the KeyRing refetch,
	// never accept a key it should not.
	mu  sync.RWMutex
	mem map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

// NewStore returns the key cache over db.
func NewStore(db *storage.DB) *Store {
	return &Store{db: db, now: time.Now, mem: map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}}
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (s *Store) FetcherName() string { return "praxis key store" }

// FetchKeys implements gomatrixserverlib.KeyFetcher: whatever we hold for
// the requested (server, key ID) pairs, valid or not.
func (s *Store) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := make(map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, len(requests))
	var missing []gomatrixserverlib.PublicKeyLookupRequest
	s.mu.RLock()
	for req, atTS := range requests {
		if r, ok := s.mem[req]; ok && r.WasValidAt(atTS, gomatrixserverlib.StrictValiditySignatureCheck) {
			out[req] = r
		} else {
			missing = append(missing, req)
		}
	}
	s.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	var q strings.Builder
	var args []any
	q.WriteString(`SELECT server_name, key_id, verify_key, valid_until_ts, expired_ts FROM server_keys WHERE `)
	for i, req := range missing {
		if i > 0 {
			q.WriteString(" OR ")
		}
		fmt.Fprintf(&q, "(server_name = $%d AND key_id = $%d)", len(args)+1, len(args)+2)
		args = append(args, string(req.ServerName), string(req.KeyID))
	}
	rows, err := s.db.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("read server keys: %w", err)
	}
	defer rows.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for rows.Next() {
		var server, keyID, key string
		var validUntil, expired int64
		if err := rows.Scan(&server, &keyID, &key, &validUntil, &expired); err != nil {
			return nil, err
		}
		raw, err := base64.RawStdEncoding.DecodeString(key)
		if err != nil {
			return nil, fmt.Errorf("stored key %s of %s is not base64: %w", keyID, server, err)
		}
		req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(server), KeyID: gomatrixserverlib.KeyID(keyID)}
		res := gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(raw)},
			ValidUntilTS: spec.Timestamp(validUntil),
			ExpiredTS:    spec.Timestamp(expired),
		}
		if expired == 0 {
			res.ExpiredTS = gomatrixserverlib.PublicKeyNotExpired
		}
		out[req] = res
		s.mem[req] = res
	}
	return out, rows.Err()
}

// StoreKeys implements gomatrixserverlib.KeyDatabase. A copy never
// shortens what we know: the later valid_until_ts wins, and a key once
// seen as retired stays retired.
func (s *Store) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	now := s.now().UnixMilli()
	for req, res := range results {
		expired := int64(res.ExpiredTS)
		if res.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired {
			expired = 0
		}
		_, err := s.db.Exec(ctx, `INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				verify_key = excluded.verify_key,
				valid_until_ts = CASE WHEN excluded.valid_until_ts > server_keys.valid_until_ts THEN excluded.valid_until_ts ELSE server_keys.valid_until_ts END,
				expired_ts = CASE WHEN server_keys.expired_ts <> 0 AND (excluded.expired_ts = 0 OR excluded.expired_ts > server_keys.expired_ts) THEN server_keys.expired_ts ELSE excluded.expired_ts END,
				fetched_ts = excluded.fetched_ts`,
			string(req.ServerName), string(req.KeyID), base64.RawStdEncoding.EncodeToString(res.Key), int64(res.ValidUntilTS), expired, now)
		if err != nil {
			return fmt.Errorf("store key %s of %s: %w", req.KeyID, req.ServerName, err)
		}
		s.mu.Lock()
		delete(s.mem, req) // re-read the merged row next time
		s.mu.Unlock()
	}
	return nil
}

// Keys returns every stored key of server, for the notary endpoint.
func (s *Store) Keys(ctx context.Context, server string) (map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult, error) {
	rows, err := s.db.Query(ctx, `SELECT key_id, verify_key, valid_until_ts, expired_ts FROM server_keys WHERE server_name = $1`, server)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", server, err)
	}
	defer rows.Close()
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyLookupResult{}
	for rows.Next() {
		var keyID, key string
		var validUntil, expired int64
		if err := rows.Scan(&keyID, &key, &validUntil, &expired); err != nil {
			return nil, err
		}
		raw, err := base64.RawStdEncoding.DecodeString(key)
		if err != nil {
			return nil, fmt.Errorf("stored key %s of %s is not base64: %w", keyID, server, err)
		}
		r := gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: raw}, ValidUntilTS: spec.Timestamp(validUntil), ExpiredTS: spec.Timestamp(expired)}
		if expired == 0 {
			r.ExpiredTS = gomatrixserverlib.PublicKeyNotExpired
		}
		out[gomatrixserverlib.KeyID(keyID)] = r
	}
	return out, rows.Err()
}

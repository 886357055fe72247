package federation

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/tidwall/gjson"

	"praxis/crypto/keyserver"
	"praxis/internal/storage"
)

// The cache of other servers' users' keys. A query serves a user from the
// cache while it is fresh (not marked stale, updated within cacheTTL),
// else asks the partner and refills it; when the partner cannot be
// reached, what the cache holds is served rather than nothing, so local
// clients can still encrypt to devices they know. The partner's
// m.device_list_update EDUs keep the cache current: one whose prev_id
// names the stream_id we are at is applied as it stands; any other (a
// gap: we missed an update) makes us resync the user's whole list via
// /user/devices.

// cacheTTL bounds how long cached keys are served without a refetch when
// no EDU touched them (e.g. the user no longer shares a room with us).
const cacheTTL = time.Hour

// QueryKeys implements keyserver.Remote.
func (e *E2EE) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*keyserver.QueryResponse, error) {
	users := make([]string, 0, len(deviceKeys))
	for u := range deviceKeys {
		if serverOfID(u) == server {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	state, err := e.cacheState(ctx, users)
	if err != nil {
		return nil, err
	}
	var fetch []string
	for _, u := range users {
		if st, ok := state[u]; !ok || st.stale || e.API.now().Sub(time.UnixMilli(st.updated)) > cacheTTL {
			fetch = append(fetch, u)
		}
	}
	if len(fetch) > 0 {
		ask := map[string][]string{}
		for _, u := range fetch {
			ask[u] = []string{} // all devices: the cache holds whole lists
		}
		live, err := e.queryLive(ctx, server, ask)
		if err != nil {
			cached := 0
			for _, u := range fetch {
				if _, ok := state[u]; ok {
					cached++
				}
			}
			if cached < len(fetch) {
				return nil, err
			}
			slog.InfoContext(ctx, "partner unreachable: serving cached keys", "server", server, "users", len(fetch))
		} else if err := e.storeFetched(ctx, fetch, live); err != nil {
			return nil, err
		}
	}
	return e.fromCache(ctx, deviceKeys, users)
}

type cacheRow struct {
	streamID, updated int64
	stale             bool
}

func (e *E2EE) cacheState(ctx context.Context, users []string) (map[string]cacheRow, error) {
	out := map[string]cacheRow{}
	if len(users) == 0 {
		return out, nil
	}
	q, args := storage.In(`SELECT user_id, stream_id, stale, updated_ts FROM remote_device_lists WHERE user_id IN ($IN)`, 0, users)
	rows, err := e.DB.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read key cache: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var r cacheRow
		if err := rows.Scan(&u, &r.streamID, &r.stale, &r.updated); err != nil {
			return nil, err
		}
		out[u] = r
	}
	return out, rows.Err()
}

// storeFetched replaces the cached lists of users with a live answer.
func (e *E2EE) storeFetched(ctx context.Context, users []string, live *keyserver.QueryResponse) error {
	return e.DB.Transact(ctx, func(tx *storage.DB) error {
		for _, u := range users {
			devs := map[string]json.RawMessage{}
			for d, k := range live.DeviceKeys[u] {
				devs[d] = k
			}
			cs := map[string]json.RawMessage{"master": live.MasterKeys[u], "self_signing": live.SelfSigningKeys[u]}
			if err := e.replaceUser(ctx, tx, u, -1, devs, cs); err != nil {
				return err
			}
		}
		return nil
	})
}

// replaceUser replaces a user's cached devices and cross-signing keys;
// streamID -1 keeps the stream_id we had (0 for a new user).
func (e *E2EE) replaceUser(ctx context.Context, tx *storage.DB, userID string, streamID int64, devs, crossSigning map[string]json.RawMessage) error {
	if _, err := tx.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("replace cached keys of %s: %w", userID, err)
	}
	for d, k := range devs {
		if _, err := tx.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)`, userID, d, string(k)); err != nil {
			return fmt.Errorf("cache keys of %s: %w", userID, err)
		}
	}
	for typ, k := range crossSigning {
		if len(k) == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, typ, string(k)); err != nil {
			return fmt.Errorf("cache cross-signing keys of %s: %w", userID, err)
		}
	}
	now := e.API.now().UnixMilli()
	if streamID < 0 {
		_, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, 0, FALSE, $2)
			ON CONFLICT (user_id) DO UPDATE SET stale = FALSE, updated_ts = excluded.updated_ts`, userID, now)
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, $2, FALSE, $3)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = FALSE, updated_ts = excluded.updated_ts`, userID, streamID, now)
	return err
}

// fromCache answers a query from the cache, honouring the device lists
// asked for.
func (e *E2EE) fromCache(ctx context.Context, deviceKeys map[string][]string, users []string) (*keyserver.QueryResponse, error) {
	out := &keyserver.QueryResponse{
		DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
	}
	if len(users) == 0 {
		return out, nil
	}
	for _, u := range users {
		out.DeviceKeys[u] = map[string]json.RawMessage{}
	}
	q, args := storage.In(`SELECT user_id, device_id, key_json FROM remote_device_keys WHERE user_id IN ($IN)`, 0, users)
	rows, err := e.DB.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read key cache: %w", err)
	}
	for rows.Next() {
		var u, d, k string
		if err := rows.Scan(&u, &d, &k); err != nil {
			rows.Close()
			return nil, err
		}
		if want := deviceKeys[u]; len(want) > 0 && !slices.Contains(want, d) {
			continue
		}
		out.DeviceKeys[u][d] = json.RawMessage(k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	q, args = storage.In(`SELECT user_id, key_type, key_json FROM remote_cross_signing_keys WHERE user_id IN ($IN)`, 0, users)
	rows, err = e.DB.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read key cache: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, typ, k string
		if err := rows.Scan(&u, &typ, &k); err != nil {
			return nil, err
		}
		switch typ {
		case "master":
			out.MasterKeys[u] = json.RawMessage(k)
		case "self_signing":
			out.SelfSigningKeys[u] = json.RawMessage(k)
		}
	}
	return out, rows.Err()
}

// applyDeviceListUpdate follows an m.device_list_update in the cache. A
// user we do not cache is left alone (the next query fetches it).
func (e *E2EE) applyDeviceListUpdate(ctx context.Context, userID string, content json.RawMessage) error {
	var u struct {
		DeviceID string          `json:"device_id"`
		StreamID int64           `json:"stream_id"`
		PrevID   []int64         `json:"prev_id"`
		Deleted  bool            `json:"deleted"`
		Keys     json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("m.device_list_update: %w", err)
	}
	gap := false
	err := e.DB.Transact(ctx, func(tx *storage.DB) error {
		var cur int64
		err := tx.QueryRow(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case cur != 0 && u.StreamID < cur:
			return nil // old news
		case cur != 0 && u.StreamID == cur:
			// the update we are at again (a retried transaction, or one
			// of several EDUs under one stream_id as Praxis sent before
			// each change had its own): applying it twice is harmless
		case cur == 0 || !slices.Contains(u.PrevID, cur) || u.DeviceID == "":
			gap = true
			if u.Deleted && u.DeviceID != "" {
				// whatever we missed, a device its server calls deleted
				// is not served again, even if the resync fails
				if _, err := tx.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, userID, u.DeviceID); err != nil {
					return fmt.Errorf("drop deleted device of %s: %w", userID, err)
				}
			}
			_, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE WHERE user_id = $1`, userID)
			return err
		}
		switch {
		case u.Deleted:
			_, err = tx.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, userID, u.DeviceID)
		case len(u.Keys) > 0 && gjson.GetBytes(u.Keys, "user_id").String() == userID && gjson.GetBytes(u.Keys, "device_id").String() == u.DeviceID:
			_, err = tx.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, u.DeviceID, string(u.Keys))
		default:
			// a change without the keys: only a resync tells us what it was
			gap = true
			_, err = tx.Exec(ctx, `UPDATE remote_device_lists SET stale = TRUE WHERE user_id = $1`, userID)
			return err
		}
		if err != nil {
			return fmt.Errorf("apply device-list update of %s: %w", userID, err)
		}
		_, err = tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $1, updated_ts = $2 WHERE user_id = $3`, u.StreamID, e.API.now().UnixMilli(), userID)
		return err
	})
	if err != nil || !gap {
		return err
	}
	return e.resync(ctx, userID)
}

// resync replaces a user's cached list with the partner's whole list
// (/user/devices). On failure the user stays stale: the next query asks
// again.
func (e *E2EE) resync(ctx context.Context, userID string) error {
	var res struct {
		StreamID int64 `json:"stream_id"`
		Devices  []struct {
			DeviceID string          `json:"device_id"`
			Keys     json.RawMessage `json:"keys"`
		} `json:"devices"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	server := serverOfID(userID)
	if err := e.do(ctx, "GET", server, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &res); err != nil {
		return fmt.Errorf("resync devices of %s: %w", userID, err)
	}
	devs := map[string]json.RawMessage{}
	for _, d := range res.Devices {
		if gjson.GetBytes(d.Keys, "user_id").String() == userID && gjson.GetBytes(d.Keys, "device_id").String() == d.DeviceID {
			devs[d.DeviceID] = d.Keys
		}
	}
	cs := map[string]json.RawMessage{}
	if gjson.GetBytes(res.MasterKey, "user_id").String() == userID {
		cs["master"] = res.MasterKey
	}
	if gjson.GetBytes(res.SelfSigningKey, "user_id").String() == userID {
		cs["self_signing"] = res.SelfSigningKey
	}
	return e.DB.Transact(ctx, func(tx *storage.DB) error {
		return e.replaceUser(ctx, tx, userID, max(res.StreamID, 0), devs, cs)
	})
}

// applySigningKeyUpdate stores new cross-signing keys of a cached user.
func (e *E2EE) applySigningKeyUpdate(ctx context.Context, userID string, content json.RawMessage) error {
	return e.DB.Transact(ctx, func(tx *storage.DB) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&n); err != nil || n == 0 {
			return err
		}
		for field, typ := range map[string]string{"master_key": "master", "self_signing_key": "self_signing"} {
			k := gjson.GetBytes(content, field)
			if !k.IsObject() || k.Get("user_id").String() != userID {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, typ, k.Raw); err != nil {
				return fmt.Errorf("cache cross-signing keys of %s: %w", userID, err)
			}
		}
		return nil
	})
}

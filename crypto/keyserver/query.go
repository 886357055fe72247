package keyserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"praxis/internal/storage"
)

// QueryResponse is the body of a /keys/query answer.
type QueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]json.RawMessage            `json:"failures"`
}

type signature struct{ signer, keyID, sig string }

// Query returns the device keys and cross-signing keys of the requested
// users (an empty device list means all devices), with every signature
// uploaded for them merged in. A user's user-signing key is returned only
// to that user.
func (s *Service) Query(ctx context.Context, caller string, req map[string][]string) (*QueryResponse, error) {
	resp := &QueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
		Failures:        map[string]json.RawMessage{},
	}
	var local []string
	remote := map[string]map[string][]string{}
	for u, devs := range req {
		if s.isLocal(u) {
			local = append(local, u)
			resp.DeviceKeys[u] = map[string]json.RawMessage{}
			continue
		}
		srv := serverOf(u)
		if remote[srv] == nil {
			remote[srv] = map[string][]string{}
		}
		remote[srv][u] = devs
	}
	if len(local) > 0 {
		if err := s.queryLocal(ctx, caller, local, req, resp); err != nil {
			return nil, err
		}
	}
	for srv, users := range remote {
		if s.remote == nil {
			resp.Failures[srv] = unreachable
			continue
		}
		r, err := s.remote.QueryKeys(ctx, srv, users)
		if err != nil {
			resp.Failures[srv] = unreachable
			continue
		}
		for u, d := range r.DeviceKeys {
			resp.DeviceKeys[u] = d
		}
		for u, k := range r.MasterKeys {
			resp.MasterKeys[u] = k
		}
		for u, k := range r.SelfSigningKeys {
			resp.SelfSigningKeys[u] = k
		}
	}
	return resp, nil
}

func (s *Service) queryLocal(ctx context.Context, caller string, userIDs []string, req map[string][]string, resp *QueryResponse) error {
	sigs, err := s.signatures(ctx, caller, userIDs)
	if err != nil {
		return err
	}
	q, args := storage.In(`SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM device_keys k
		LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id IN ($IN)`, 0, userIDs)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query device keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var userID, deviceID, js string
		var name sql.NullString
		if err := rows.Scan(&userID, &deviceID, &js, &name); err != nil {
			return err
		}
		if want := req[userID]; len(want) > 0 && !contains(want, deviceID) {
			continue
		}
		b := mergeSignatures([]byte(js), sigs[userID+"|"+deviceID])
		if name.Valid && name.String != "" {
			b, _ = sjson.SetBytes(b, "unsigned.device_display_name", name.String)
		}
		resp.DeviceKeys[userID][deviceID] = b
	}
	if err := rows.Err(); err != nil {
		return err
	}
	rows.Close()

	q, args = storage.In(`SELECT user_id, key_type, public_key, key_json FROM cross_signing_keys WHERE user_id IN ($IN)`, 0, userIDs)
	rows, err = s.db.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query cross-signing keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var userID, typ, pub, js string
		if err := rows.Scan(&userID, &typ, &pub, &js); err != nil {
			return err
		}
		b := json.RawMessage(mergeSignatures([]byte(js), sigs[userID+"|"+pub]))
		switch typ {
		case "master":
			resp.MasterKeys[userID] = b
		case "self_signing":
			resp.SelfSigningKeys[userID] = b
		case "user_signing":
			if userID == caller {
				resp.UserSigningKeys[userID] = b
			}
		}
	}
	return rows.Err()
}

// signatures loads the uploaded signatures on userIDs' keys, keyed by
// "user|target key". A signature one user made on another user's key
// (with a user-signing key) is private to the signer.
func (s *Service) signatures(ctx context.Context, caller string, userIDs []string) (map[string][]signature, error) {
	q, args := storage.In(`SELECT target_user_id, target_key, signer_user_id, signer_key_id, signature FROM key_signatures WHERE target_user_id IN ($IN)`, 0, userIDs)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query key signatures: %w", err)
	}
	defer rows.Close()
	out := map[string][]signature{}
	for rows.Next() {
		var target, key string
		var sg signature
		if err := rows.Scan(&target, &key, &sg.signer, &sg.keyID, &sg.sig); err != nil {
			return nil, err
		}
		if sg.signer != target && sg.signer != caller {
			continue
		}
		out[target+"|"+key] = append(out[target+"|"+key], sg)
	}
	return out, rows.Err()
}

// mergeSignatures adds signatures to a signed object without touching
// anything else in it.
func mergeSignatures(obj []byte, sigs []signature) []byte {
	for _, sg := range sigs {
		path := "signatures." + gjson.Escape(sg.signer) + "." + gjson.Escape(sg.keyID)
		if gjson.GetBytes(obj, path).Exists() {
			continue
		}
		if b, err := sjson.SetBytes(obj, path, sg.sig); err == nil {
			obj = b
		}
	}
	return obj
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

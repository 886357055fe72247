package keyserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// DeviceDropper deletes per-device state another service owns (the
// to-device inbox) inside the caller's transaction.
type DeviceDropper func(ctx context.Context, tx *storage.DB, userID string, deviceIDs []string) error

// OnDropDehydrated registers what must go when a dehydrated device is
// replaced or deleted.
func (s *Service) OnDropDehydrated(h DeviceDropper) { s.dropHooks = append(s.dropHooks, h) }

// DehydratedDevice is the body of PUT /dehydrated_device (MSC3814).
type DehydratedDevice struct {
	DeviceID     string                     `json:"device_id"`
	DisplayName  string                     `json:"initial_device_display_name"`
	DeviceData   json.RawMessage            `json:"device_data"`
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// PutDehydratedDevice stores the user's dehydrated device with its keys,
// replacing (and deleting) the previous one.
func (s *Service) PutDehydratedDevice(ctx context.Context, userID string, d DehydratedDevice) error {
	if d.DeviceID == "" || len(d.DeviceID) > 255 {
		return httputil.MissingParam("device_id is required")
	}
	if len(d.DeviceData) == 0 || d.DeviceData[0] != '{' || !json.Valid(d.DeviceData) {
		return httputil.BadJSON("device_data must be an object")
	}
	if !present(d.DeviceKeys) {
		return httputil.MissingParam("device_keys are required")
	}
	var pos int64
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		// The ID must not be one of the user's real devices: their keys
		// and inbox would be taken over.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2`, userID, d.DeviceID).Scan(&one)
		if err == nil {
			return httputil.InvalidParam("device_id is in use by a device of this user")
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check device ID: %w", err)
		}
		var old string
		err = tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read dehydrated device of %s: %w", userID, err)
		}
		if old != "" {
			if err := s.dropDehydrated(ctx, tx, userID, old); err != nil {
				return err
			}
		}
		var name any
		if d.DisplayName != "" {
			name = d.DisplayName
		}
		if _, err := tx.Exec(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data, display_name, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			userID, d.DeviceID, string(d.DeviceData), name, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("store dehydrated device of %s: %w", userID, err)
		}
		inTx := *s
		inTx.db, inTx.notifier = tx, nil
		if _, err := inTx.Upload(ctx, userID, d.DeviceID, UploadRequest{DeviceKeys: d.DeviceKeys, OneTimeKeys: d.OneTimeKeys, FallbackKeys: d.FallbackKeys}); err != nil {
			return err
		}
		pos, err = tx.StreamHead(ctx) // the position Upload took for the device-list change
		return err
	})
	if err != nil {
		return err
	}
	s.publish(pos)
	return nil
}

// dropDehydrated deletes a dehydrated device's keys and inbox and
// announces the change.
func (s *Service) dropDehydrated(ctx context.Context, tx *storage.DB, userID, deviceID string) error {
	if err := s.dropDehydratedKeys(ctx, tx, userID, deviceID); err != nil {
		return err
	}
	pos, err := markChanged(ctx, tx, change{userID: userID, deviceID: deviceID, deleted: true})
	if err != nil {
		return err
	}
	tx.AfterCommit(func() { s.publish(pos) })
	return nil
}

func (s *Service) dropDehydratedKeys(ctx context.Context, tx *storage.DB, userID, deviceID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("delete dehydrated device of %s: %w", userID, err)
	}
	for _, h := range s.dropHooks {
		if err := h(ctx, tx, userID, []string{deviceID}); err != nil {
			return err
		}
	}
	return deleteDeviceKeys(ctx, tx, userID, []string{deviceID})
}

// DehydratedDeviceData is the answer to GET /dehydrated_device.
type DehydratedDeviceData struct {
	DeviceID   string          `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

// GetDehydratedDevice returns the user's dehydrated device.
func (s *Service) GetDehydratedDevice(ctx context.Context, userID string) (*DehydratedDeviceData, error) {
	var d DehydratedDeviceData
	var data string
	err := s.db.QueryRow(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&d.DeviceID, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, httputil.NotFound("no dehydrated device")
	}
	if err != nil {
		return nil, fmt.Errorf("read dehydrated device of %s: %w", userID, err)
	}
	d.DeviceData = json.RawMessage(data)
	return &d, nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device and returns
// its ID.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	var id string
	err := s.db.Transact(ctx, func(tx *storage.DB) error {
		err := tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return httputil.NotFound("no dehydrated device")
		}
		if err != nil {
			return fmt.Errorf("read dehydrated device of %s: %w", userID, err)
		}
		return s.dropDehydrated(ctx, tx, userID, id)
	})
	return id, err
}

// IsDehydratedDevice reports whether deviceID is userID's dehydrated device.
func (s *Service) IsDehydratedDevice(ctx context.Context, userID, deviceID string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read dehydrated device of %s: %w", userID, err)
	}
	return true, nil
}

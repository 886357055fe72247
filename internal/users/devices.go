package users

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// DeviceInfo is a device as listed by /devices.
type DeviceInfo struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

// Devices lists userID's devices.
func (s *Service) Devices(ctx context.Context, userID string) ([]DeviceInfo, error) {
	rows, err := s.db.Query(ctx, `SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	defer rows.Close()
	out := []DeviceInfo{}
	for rows.Next() {
		var d DeviceInfo
		var dn, ip sql.NullString
		if err := rows.Scan(&d.DeviceID, &dn, &ip, &d.LastSeenTS); err != nil {
			return nil, err
		}
		d.DisplayName, d.LastSeenIP = dn.String, ip.String
		out = append(out, d)
	}
	return out, rows.Err()
}

// Device returns one device.
func (s *Service) Device(ctx context.Context, userID, deviceID string) (*DeviceInfo, error) {
	var d DeviceInfo
	var dn, ip sql.NullString
	err := s.db.QueryRow(ctx, `SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
		Scan(&d.DeviceID, &dn, &ip, &d.LastSeenTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read device %s of %s: %w", deviceID, userID, err)
	}
	d.DisplayName, d.LastSeenIP = dn.String, ip.String
	return &d, nil
}

// SetDeviceDisplayName renames a device.
func (s *Service) SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) error {
	res, err := s.db.Exec(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, name, userID, deviceID)
	if err != nil {
		return fmt.Errorf("rename device %s: %w", deviceID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// OnDeleteDevices registers a hook run when devices are deleted.
func (s *Service) OnDeleteDevices(h DeviceHook) { s.deviceHooks = append(s.deviceHooks, h) }

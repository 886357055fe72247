package keyserver

import (
	"context"
	"encoding/json"

	"praxis/crypto/todevice"
)

// E2EE is what /sync reads from the encryption services: the to-device
// inbox, device-list changes and one-time/fallback key state, behind one
// value so sync needs a single field.
type E2EE struct {
	Keys  *Service
	Inbox *todevice.Service
}

// ToDevice returns a device's to-device messages in (since, upto].
func (e *E2EE) ToDevice(ctx context.Context, userID, deviceID string, since, upto int64, limit int) ([]json.RawMessage, int64, error) {
	return e.Inbox.ToDevice(ctx, userID, deviceID, since, upto, limit)
}

// AckToDevice deletes messages the device has synced past.
func (e *E2EE) AckToDevice(ctx context.Context, userID, deviceID string, upto int64) error {
	return e.Inbox.AckToDevice(ctx, userID, deviceID, upto)
}

// DeviceListChanges reports whose device lists changed for userID.
func (e *E2EE) DeviceListChanges(ctx context.Context, userID string, since, upto int64) ([]string, []string, error) {
	return e.Keys.DeviceListChanges(ctx, userID, since, upto)
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys.
func (e *E2EE) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	return e.Keys.OneTimeKeyCounts(ctx, userID, deviceID)
}

// UnusedFallbackKeyTypes lists a device's unused fallback key algorithms.
func (e *E2EE) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return e.Keys.UnusedFallbackKeyTypes(ctx, userID, deviceID)
}

package roomserver

import (
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
)

// supportedVersions are the room versions this server creates and joins.
// gomatrixserverlib knows more (experimental ones marked stable), so the
// list is ours, not the library's.
var supportedVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// SupportedVersions lists the room versions for /capabilities.
func SupportedVersions() []string { return slices.Clone(supportedVersions) }

// IsSupportedVersion reports whether rooms of version v can be created here.
func IsSupportedVersion(v string) bool { return slices.Contains(supportedVersions, v) }

// roomVersion returns the implementation of a supported version.
func versionImpl(v string) (gomatrixserverlib.IRoomVersion, bool) {
	if !IsSupportedVersion(v) {
		return nil, false
	}
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
	return impl, err == nil
}

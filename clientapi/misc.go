package clientapi

import (
	"net/http"
	"strings"

	"praxis/internal/users"
)

const r0 = "/_matrix/client/r0"

// legacyR0 serves the r0 paths of the versions we advertise (r0.6.1): spec
// v1.1 renamed r0 to v3 without changing an endpoint, so an r0 request is
// answered as its v3 twin, unknown ones included (M_UNRECOGNIZED).
func legacyR0(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = v3 + strings.TrimPrefix(r.URL.Path, r0)
		if r.URL.RawPath != "" {
			r2.URL.RawPath = v3 + strings.TrimPrefix(r.URL.RawPath, r0)
		}
		r2.RequestURI = r2.URL.RequestURI()
		mux.ServeHTTP(w, r2)
	})
}

type versionsResponse struct {
	Versions         []string        `json:"versions"`
	UnstableFeatures map[string]bool `json:"unstable_features"`
}

// versions serves GET /_matrix/client/versions.
func (a *API) versions(r *http.Request) (*versionsResponse, error) {
	return &versionsResponse{
		Versions: []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"},
		UnstableFeatures: map[string]bool{
			"org.matrix.msc3967": true, // first cross-signing upload needs no UIA
			"org.matrix.msc3814": true, // dehydrated devices
		},
	}, nil
}

type wellKnownClient struct {
	Homeserver struct {
		BaseURL string `json:"base_url"`
	} `json:"m.homeserver"`
}

// wellKnownClient serves GET /.well-known/matrix/client.
func (a *API) wellKnownClient(r *http.Request) (*wellKnownClient, error) {
	var wk wellKnownClient
	wk.Homeserver.BaseURL = a.Config.PublicBaseURL
	return &wk, nil
}

// supportedRoomVersions is our own list (ARCHITECTURE §1.8):
// gomatrixserverlib's "stable" set includes experimental versions.
var supportedRoomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

type capability struct {
	Enabled bool `json:"enabled"`
}

type roomVersionsCapability struct {
	Default   string            `json:"default"`
	Available map[string]string `json:"available"`
}

type capabilitiesResponse struct {
	Capabilities struct {
		ChangePassword  capability             `json:"m.change_password"`
		RoomVersions    roomVersionsCapability `json:"m.room_versions"`
		SetDisplayName  capability             `json:"m.set_displayname"`
		SetAvatarURL    capability             `json:"m.set_avatar_url"`
		ThreePIDChanges capability             `json:"m.3pid_changes"`
		GetLoginToken   capability             `json:"m.get_login_token"`
	} `json:"capabilities"`
}

// capabilities serves GET /_matrix/client/v3/capabilities.
func (a *API) capabilities(r *http.Request, dev *users.Device) (*capabilitiesResponse, error) {
	var c capabilitiesResponse
	c.Capabilities.ChangePassword.Enabled = true
	c.Capabilities.SetDisplayName.Enabled = true
	c.Capabilities.SetAvatarURL.Enabled = true
	c.Capabilities.RoomVersions.Default = a.Config.Rooms.DefaultVersion
	c.Capabilities.RoomVersions.Available = make(map[string]string, len(supportedRoomVersions))
	for _, v := range supportedRoomVersions {
		c.Capabilities.RoomVersions.Available[v] = "stable"
	}
	return &c, nil
}

package clientapi

import "net/http"

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

package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"praxis/clientapi/auth"
	"praxis/internal/httputil"
	"praxis/internal/media"
	"praxis/internal/users"
)

const (
	mediaV1 = "/_matrix/media/v1"
	mediaV3 = "/_matrix/media/v3"
)

// mediaCSP keeps a browser from running anything it is served from the
// media repository, even if a file slipped past the policy.
const mediaCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

type uploadResponse struct {
	ContentURI string `json:"content_uri"`
}

// uploadMedia serves POST /_matrix/media/v3/upload. The body is streamed
// into the store; the file policy looks at its first bytes.
func (a *API) uploadMedia(r *http.Request, dev *users.Device) (*uploadResponse, error) {
	m, err := a.Media.Upload(r.Context(), media.UploadRequest{
		UserID:        dev.UserID,
		ContentType:   r.Header.Get("Content-Type"),
		FileName:      r.URL.Query().Get("filename"),
		ContentLength: r.ContentLength,
		Body:          r.Body,
	})
	if err != nil {
		return nil, err
	}
	return &uploadResponse{ContentURI: m.MXC()}, nil
}

// uploadMediaTo serves PUT /_matrix/media/v3/upload/{serverName}/{mediaId}:
// the content of an ID from /create, by its creator, once.
func (a *API) uploadMediaTo(r *http.Request, dev *users.Device) (*empty, error) {
	if r.PathValue("serverName") != a.Config.ServerName {
		return nil, httputil.NotFound("unknown media ID")
	}
	_, err := a.Media.Upload(r.Context(), media.UploadRequest{
		UserID:        dev.UserID,
		ContentType:   r.Header.Get("Content-Type"),
		FileName:      r.URL.Query().Get("filename"),
		ContentLength: r.ContentLength,
		Body:          r.Body,
		MediaID:       r.PathValue("mediaId"),
	})
	if err != nil {
		return nil, err
	}
	return &empty{}, nil
}

type createMediaResponse struct {
	ContentURI      string `json:"content_uri"`
	UnusedExpiresAt int64  `json:"unused_expires_at"`
}

// createMedia serves POST /_matrix/media/v1/create.
func (a *API) createMedia(r *http.Request, dev *users.Device) (*createMediaResponse, error) {
	m, err := a.Media.Create(r.Context(), dev.UserID)
	if err != nil {
		return nil, err
	}
	return &createMediaResponse{ContentURI: m.MXC(), UnusedExpiresAt: m.UnusedExpiresTS}, nil
}

type mediaConfigResponse struct {
	UploadSize int64 `json:"m.upload.size"`
}

// mediaConfig serves GET /_matrix/client/v1/media/config (and the v3 one).
func (a *API) mediaConfig(r *http.Request, dev *users.Device) (*mediaConfigResponse, error) {
	return &mediaConfigResponse{UploadSize: a.Media.MaxUploadBytes()}, nil
}

// downloadMedia serves GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}].
func (a *API) downloadMedia(authenticated bool) http.Handler {
	return a.mediaHandler(authenticated, func(r *http.Request) (*media.Content, string, error) {
		wait, err := waitParam(r)
		if err != nil {
			return nil, "", err
		}
		c, err := a.Media.Download(r.Context(), r.PathValue("serverName"), r.PathValue("mediaId"), wait)
		if err != nil {
			return nil, "", err
		}
		name := r.PathValue("fileName")
		if name == "" {
			name = c.Media.UploadName
		}
		return c, name, nil
	})
}

// thumbnailMedia serves GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}.
func (a *API) thumbnailMedia(authenticated bool) http.Handler {
	return a.mediaHandler(authenticated, func(r *http.Request) (*media.Content, string, error) {
		q := r.URL.Query()
		var req media.ThumbnailRequest
		for name, dst := range map[string]*int{"width": &req.Width, "height": &req.Height} {
			v := q.Get(name)
			if v == "" {
				return nil, "", httputil.MissingParam(name + " is required")
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, "", httputil.InvalidParam(name + " must be a positive integer")
			}
			*dst = n
		}
		req.Method = q.Get("method")
		if req.Method == "" {
			req.Method = "scale"
		}
		wait, err := waitParam(r)
		if err != nil {
			return nil, "", err
		}
		// animated=true is fine: we serve still thumbnails, as the spec
		// allows for servers that cannot animate.
		c, err := a.Media.Thumbnail(r.Context(), r.PathValue("serverName"), r.PathValue("mediaId"), req, wait)
		if err != nil {
			return nil, "", err
		}
		return c, "", nil
	})
}

// waitParam reads timeout_ms: how long to wait for a pending async upload.
func waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return media.DefaultWait, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, httputil.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(ms)*time.Millisecond, media.MaxWait), nil
}

// mediaHandler serves bytes rather than JSON. authenticated=false is the
// legacy unauthenticated API: off by default (media.legacy_unauthenticated),
// then answering 404 as the spec's "frozen" unauthenticated media does.
func (a *API) mediaHandler(authenticated bool, fn func(r *http.Request) (*media.Content, string, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authenticated {
			if _, err := auth.Device(r, a.Users); err != nil {
				httputil.WriteError(w, r, err)
				return
			}
		} else if !a.Config.Media.LegacyUnauthenticated {
			httputil.WriteError(w, r, httputil.NotFound("unauthenticated media is disabled on this server; use /_matrix/client/v1/media"))
			return
		}
		c, name, err := fn(r)
		if err != nil {
			if e := httputil.ToError(err); e.ErrCode == "M_NOT_YET_UPLOADED" {
				// An expected 504, not a server failure: keep it out of the error log.
				httputil.WriteJSON(w, e.Status, map[string]string{"errcode": e.ErrCode, "error": e.Message})
				return
			}
			httputil.WriteError(w, r, err)
			return
		}
		defer c.Body.Close()
		ct := c.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		h := w.Header()
		h.Set("Content-Type", ct)
		h.Set("Content-Disposition", media.ContentDisposition(ct, name))
		h.Set("Content-Security-Policy", mediaCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		// Private: medical files must not sit in shared caches. no-cache:
		// a quarantine or deletion takes effect on the next view.
		h.Set("Cache-Control", "private, no-cache")
		http.ServeContent(w, r, "", c.ModTime, c.Body)
	})
}

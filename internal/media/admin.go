package media

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// AuditFunc appends an admin action to the audit log inside db (the
// action's own transaction), so the record and the action commit
// together. internal/homeserver adapts internal/admin's AuditLog to it.
type AuditFunc func(ctx context.Context, db *storage.DB, actor, action, target string, params map[string]any) error

// SetAudit makes quarantine and deletion by an admin leave an audit record.
func (s *Service) SetAudit(fn AuditFunc) { s.audit = fn }

func (s *Service) auditTx(ctx context.Context, tx *storage.DB, actor, action, target string, params map[string]any) error {
	if s.audit == nil || actor == "" {
		return nil
	}
	return s.audit(ctx, tx, actor, action, target, params)
}

// Authenticate resolves the caller of an admin request: its user ID and
// whether it is a server admin, or a Matrix error (401 without a valid
// token).
type Authenticate func(r *http.Request) (userID string, isAdmin bool, err error)

const synapseAdmin = "/_synapse/admin/v1"

// AdminRoutes mounts the Synapse-compatible media admin endpoints.
func (s *Service) AdminRoutes(mux *http.ServeMux, authn Authenticate) {
	mux.Handle("POST "+synapseAdmin+"/media/quarantine/{serverName}/{mediaId}", s.adminOnly(authn, s.adminQuarantine(true)))
	mux.Handle("POST "+synapseAdmin+"/media/unquarantine/{serverName}/{mediaId}", s.adminOnly(authn, s.adminQuarantine(false)))
	mux.Handle("DELETE "+synapseAdmin+"/media/{serverName}/{mediaId}", s.adminOnly(authn, s.adminDelete))
	mux.Handle("POST "+synapseAdmin+"/media/delete", s.adminOnly(authn, s.adminDeleteBefore))
	mux.Handle("POST "+synapseAdmin+"/media/{serverName}/delete", s.adminOnly(authn, s.adminDeleteBefore))
	mux.Handle("GET "+synapseAdmin+"/users/{userId}/media", s.adminOnly(authn, s.adminUserMedia))
	mux.Handle("DELETE "+synapseAdmin+"/users/{userId}/media", s.adminOnly(authn, s.adminDeleteUserMedia))
}

func (s *Service) adminOnly(authn Authenticate, fn func(r *http.Request, admin string) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, isAdmin, err := authn(r)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if !isAdmin {
			httputil.WriteError(w, r, httputil.Forbidden("You are not a server admin"))
			return
		}
		resp, err := fn(r, userID)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

// adminQuarantine serves POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}
// and …/unquarantine/…. Quarantined media answers 404 to everyone.
func (s *Service) adminQuarantine(on bool) func(r *http.Request, admin string) (any, error) {
	return func(r *http.Request, admin string) (any, error) {
		if err := s.Quarantine(r.Context(), r.PathValue("serverName"), r.PathValue("mediaId"), admin, on); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

type deleteResponse struct {
	DeletedMedia []string `json:"deleted_media"`
	Total        int      `json:"total"`
}

// adminDelete serves DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}.
func (s *Service) adminDelete(r *http.Request, admin string) (any, error) {
	origin, id := r.PathValue("serverName"), r.PathValue("mediaId")
	if origin != s.serverName {
		return nil, httputil.InvalidParam("can only delete local media")
	}
	if err := s.DeleteBy(r.Context(), origin, id, admin); err != nil {
		return nil, err
	}
	return &deleteResponse{DeletedMedia: []string{id}, Total: 1}, nil
}

// userMedia is one entry of the user media list, in Synapse's shape.
type userMedia struct {
	MediaID            string  `json:"media_id"`
	MediaType          string  `json:"media_type"`
	MediaLength        int64   `json:"media_length"`
	UploadName         *string `json:"upload_name"`
	CreatedTS          int64   `json:"created_ts"`
	LastAccessTS       *int64  `json:"last_access_ts"`
	QuarantinedBy      *string `json:"quarantined_by"`
	SafeFromQuarantine bool    `json:"safe_from_quarantine"`
	// Pending is ours: an async ID whose upload has not arrived.
	Pending bool `json:"pending,omitempty"`
}

type userMediaResponse struct {
	Media     []userMedia `json:"media"`
	NextToken *int        `json:"next_token,omitempty"`
	Total     int         `json:"total"`
}

func parseList(q url.Values) (ListOptions, error) {
	o := ListOptions{From: 0, Limit: 100, OrderBy: "created_ts"}
	for name, dst := range map[string]*int{"from": &o.From, "limit": &o.Limit} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return o, httputil.InvalidParam(name + " must be a non-negative integer")
			}
			*dst = n
		}
	}
	o.Limit = min(o.Limit, 1000)
	if v := q.Get("order_by"); v != "" {
		if _, ok := ListColumns[v]; !ok {
			return o, httputil.InvalidParam("unknown order_by " + strconv.Quote(v))
		}
		o.OrderBy = v
	}
	switch q.Get("dir") {
	case "", "f":
	case "b":
		o.Reverse = true
	default:
		return o, httputil.InvalidParam(`dir must be "f" or "b"`)
	}
	return o, nil
}

// adminUserMedia serves GET /_synapse/admin/v1/users/{userId}/media.
func (s *Service) adminUserMedia(r *http.Request, admin string) (any, error) {
	if !strings.HasSuffix(r.PathValue("userId"), ":"+s.serverName) {
		return nil, httputil.InvalidParam("can only look up local users")
	}
	o, err := parseList(r.URL.Query())
	if err != nil {
		return nil, err
	}
	list, total, err := s.UserMedia(r.Context(), r.PathValue("userId"), o)
	if err != nil {
		return nil, err
	}
	resp := &userMediaResponse{Media: make([]userMedia, 0, len(list)), Total: total}
	for _, m := range list {
		e := userMedia{MediaID: m.MediaID, MediaType: m.ContentType, MediaLength: m.Size, CreatedTS: m.CreatedTS, Pending: m.ContentHash == ""}
		if m.UploadName != "" {
			e.UploadName = &m.UploadName
		}
		if m.LastAccessTS != 0 {
			e.LastAccessTS = &m.LastAccessTS
		}
		if m.QuarantinedBy != "" {
			e.QuarantinedBy = &m.QuarantinedBy
		}
		resp.Media = append(resp.Media, e)
	}
	if next := o.From + len(list); next < total && len(list) > 0 {
		resp.NextToken = &next
	}
	return resp, nil
}

// adminDeleteUserMedia serves DELETE /_synapse/admin/v1/users/{userId}/media:
// it deletes one page (from/limit/order_by/dir as for listing).
func (s *Service) adminDeleteUserMedia(r *http.Request, admin string) (any, error) {
	if !strings.HasSuffix(r.PathValue("userId"), ":"+s.serverName) {
		return nil, httputil.InvalidParam("can only look up local users")
	}
	o, err := parseList(r.URL.Query())
	if err != nil {
		return nil, err
	}
	list, _, err := s.UserMedia(r.Context(), r.PathValue("userId"), o)
	if err != nil {
		return nil, err
	}
	resp := &deleteResponse{DeletedMedia: []string{}}
	for _, m := range list {
		if err := s.DeleteBy(r.Context(), m.Origin, m.MediaID, admin); err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, err
		}
		resp.DeletedMedia = append(resp.DeletedMedia, m.MediaID)
	}
	resp.Total = len(resp.DeletedMedia)
	return resp, nil
}

// adminDeleteBefore serves POST /_synapse/admin/v1/media/delete?before_ts=…
// [&size_gt=…][&keep_profiles=true|false] (and the older
// /media/{serverName}/delete form): local media uploaded before
// before_ts. keep_profiles (default true) spares media the keep hook names
// (avatars).
func (s *Service) adminDeleteBefore(r *http.Request, admin string) (any, error) {
	if sn := r.PathValue("serverName"); sn != "" && sn != s.serverName {
		return nil, httputil.InvalidParam("can only delete local media")
	}
	q := r.URL.Query()
	if q.Get("before_ts") == "" {
		return nil, httputil.MissingParam("before_ts is required")
	}
	before, err := strconv.ParseInt(q.Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return nil, httputil.InvalidParam("before_ts must be a timestamp in milliseconds")
	}
	var sizeGT int64
	if v := q.Get("size_gt"); v != "" {
		if sizeGT, err = strconv.ParseInt(v, 10, 64); err != nil || sizeGT < 0 {
			return nil, httputil.InvalidParam("size_gt must be a non-negative integer")
		}
	}
	keep := true
	switch q.Get("keep_profiles") {
	case "", "true":
	case "false":
		keep = false
	default:
		return nil, httputil.InvalidParam(`keep_profiles must be "true" or "false"`)
	}
	ids, err := s.DeleteBefore(r.Context(), before, sizeGT, keep, admin)
	if err != nil {
		return nil, err
	}
	return &deleteResponse{DeletedMedia: ids, Total: len(ids)}, nil
}

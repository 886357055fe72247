package admin

import (
	"net/http"
	"strconv"
	"time"

	"praxis/internal/httputil"
	"praxis/internal/users"
)

type auditPage struct {
	Entries   []Entry `json:"entries"`
	NextToken string  `json:"next_token,omitempty"`
}

// queryTime reads a timestamp parameter: milliseconds since the epoch or
// RFC 3339.
func queryTime(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
		return ms, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UnixMilli(), nil
	}
	return 0, httputil.InvalidParam("query parameter " + name + " must be milliseconds since the epoch or an RFC 3339 time")
}

// listAudit serves GET /_praxis/admin/v1/audit: from (a seq), limit, dir,
// since, until, actor, action, target, practice. A practice admin gets
// their practice's entries whatever they ask for.
func (s *Service) listAudit(r *http.Request, caller *users.Device, practice *string) (any, error) {
	q := AuditQuery{}
	from, err := queryInt(r, "from", 0)
	if err != nil {
		return nil, err
	}
	q.From = int64(from)
	if q.Limit, err = queryInt(r, "limit", 100); err != nil {
		return nil, err
	}
	if q.Limit == 0 || q.Limit > 1000 {
		return nil, httputil.InvalidParam("limit must be between 1 and 1000")
	}
	if q.Backwards, err = queryDir(r); err != nil {
		return nil, err
	}
	if q.SinceTS, err = queryTime(r, "since"); err != nil {
		return nil, err
	}
	if q.UntilTS, err = queryTime(r, "until"); err != nil {
		return nil, err
	}
	qv := r.URL.Query()
	q.Actor, q.Action, q.Target = qv.Get("actor"), qv.Get("action"), qv.Get("target")
	switch {
	case practice != nil:
		q.Practice = practice
	case qv.Has("practice"):
		p := qv.Get("practice")
		q.Practice = &p
	}
	entries, next, err := s.audit.List(r.Context(), q)
	if err != nil {
		return nil, err
	}
	out := &auditPage{Entries: entries}
	if next > 0 {
		out.NextToken = strconv.FormatInt(next, 10)
	}
	return out, nil
}

// verifyAudit serves GET /_praxis/admin/v1/audit/verify: the result of
// walking the whole chain (200 either way; "ok" says whether it holds).
func (s *Service) verifyAudit(r *http.Request, caller *users.Device) (any, error) {
	return s.audit.Verify(r.Context())
}

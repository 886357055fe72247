package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"praxis/clientapi/auth"
	"praxis/internal/care"
	"praxis/internal/httputil"
	"praxis/internal/users"
)

// CareRoutes mounts the practice administration endpoints: practices,
// staff, coupling codes, absences, couplings. Server admins manage every
// practice; a practice admin (staff role admin) manages their own.
func (s *Service) CareRoutes(mux *http.ServeMux, c *care.Service) {
	h := &careAdmin{s: s, care: c}
	mux.Handle("GET "+praxV1+"/practices", s.admin(h.listPractices))
	mux.Handle("POST "+praxV1+"/practices", s.admin(h.createPractice))
	mux.Handle("GET "+praxV1+"/practices/{practiceId}", h.scoped(h.getPractice))
	mux.Handle("PUT "+praxV1+"/practices/{practiceId}", h.scoped(h.updatePractice))
	mux.Handle("GET "+praxV1+"/practices/{practiceId}/staff", h.scoped(h.listStaff))
	mux.Handle("PUT "+praxV1+"/practices/{practiceId}/staff/{userId}", h.scoped(h.putStaff))
	mux.Handle("DELETE "+praxV1+"/practices/{practiceId}/staff/{userId}", h.scoped(h.removeStaff))
	mux.Handle("GET "+praxV1+"/practices/{practiceId}/codes", h.scoped(h.listCodes))
	mux.Handle("POST "+praxV1+"/practices/{practiceId}/codes", h.scoped(h.createCode))
	mux.Handle("DELETE "+praxV1+"/practices/{practiceId}/codes/{codeId}", h.scoped(h.revokeCode))
	mux.Handle("GET "+praxV1+"/practices/{practiceId}/absences", h.scoped(h.listAbsences))
	mux.Handle("POST "+praxV1+"/practices/{practiceId}/absences", h.scoped(h.addAbsence))
	mux.Handle("DELETE "+praxV1+"/practices/{practiceId}/absences/{absenceId}", h.scoped(h.deleteAbsence))
	mux.Handle("GET "+praxV1+"/practices/{practiceId}/couplings", h.scoped(h.listCouplings))
}

// PracticeScopeOf adapts the care domain's practice admins to the audit
// log's scope hook.
func PracticeScopeOf(c *care.Service) PracticeScope {
	return func(ctx context.Context, caller *users.Device) (string, error) {
		return c.PracticeAdminOf(ctx, caller.UserID)
	}
}

type careAdmin struct {
	s    *Service
	care *care.Service
}

// scoped adapts a handler on one practice: server admins may call it for
// any practice, a practice admin for their own only.
func (h *careAdmin) scoped(fn func(r *http.Request, caller *users.Device, practice string) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dev, err := auth.Device(r, h.s.users)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		practice := r.PathValue("practiceId")
		if !dev.IsAdmin {
			mine, err := h.care.PracticeAdminOf(r.Context(), dev.UserID)
			if err != nil {
				httputil.WriteError(w, r, err)
				return
			}
			if mine == "" || mine != practice {
				httputil.WriteError(w, r, httputil.Forbidden("you are not an admin of practice "+quote(practice)))
				return
			}
		}
		r = r.WithContext(auth.WithDevice(r.Context(), dev))
		resp, err := fn(r, dev, practice)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
	})
}

type practiceList struct {
	Practices []care.Practice `json:"practices"`
}

// listPractices serves GET /_praxis/admin/v1/practices.
func (h *careAdmin) listPractices(r *http.Request, caller *users.Device) (any, error) {
	ps, err := h.care.Practices(r.Context())
	if err != nil {
		return nil, err
	}
	return &practiceList{Practices: ps}, nil
}

type createPracticeRequest struct {
	ID string `json:"practice_id"`
	care.PracticeUpdate
}

// createPractice serves POST /_praxis/admin/v1/practices: the practice,
// its service account and its request board.
func (h *careAdmin) createPractice(r *http.Request, caller *users.Device) (any, error) {
	var req createPracticeRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return h.care.CreatePractice(r.Context(), caller.UserID, req.ID, req.PracticeUpdate)
}

// getPractice serves GET /_praxis/admin/v1/practices/{practiceId}.
func (h *careAdmin) getPractice(r *http.Request, caller *users.Device, practice string) (any, error) {
	return h.care.Practice(r.Context(), practice)
}

// updatePractice serves PUT /_praxis/admin/v1/practices/{practiceId}:
// the fields present change.
func (h *careAdmin) updatePractice(r *http.Request, caller *users.Device, practice string) (any, error) {
	var req care.PracticeUpdate
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return h.care.UpdatePractice(r.Context(), caller.UserID, practice, req)
}

type staffList struct {
	Staff []care.Staff `json:"staff"`
}

// listStaff serves GET /_praxis/admin/v1/practices/{practiceId}/staff.
func (h *careAdmin) listStaff(r *http.Request, caller *users.Device, practice string) (any, error) {
	st, err := h.care.ListStaff(r.Context(), practice)
	if err != nil {
		return nil, err
	}
	return &staffList{Staff: st}, nil
}

// putStaff serves PUT /_praxis/admin/v1/practices/{practiceId}/staff/{userId}:
// adds the account as staff with {"role"}, or changes role and on_duty of
// an existing staff member.
func (h *careAdmin) putStaff(r *http.Request, caller *users.Device, practice string) (any, error) {
	userID, err := h.s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	var req struct {
		Role   *string `json:"role"`
		OnDuty *bool   `json:"on_duty"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	st, err := h.care.StaffOf(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	if st != nil {
		if st.PracticeID != practice {
			return nil, httputil.Errorf(http.StatusConflict, "M_USER_IN_USE", "%s is staff of another practice", userID)
		}
		return h.care.SetStaff(r.Context(), caller.UserID, practice, userID, req.Role, req.OnDuty)
	}
	if req.Role == nil {
		return nil, httputil.MissingParam("role is required to add a staff member")
	}
	if _, err := h.care.AddStaff(r.Context(), caller.UserID, practice, userID, *req.Role); err != nil {
		return nil, err
	}
	if req.OnDuty != nil && !*req.OnDuty {
		return h.care.SetStaff(r.Context(), caller.UserID, practice, userID, nil, req.OnDuty)
	}
	return h.care.StaffOf(r.Context(), userID)
}

// removeStaff serves DELETE /_praxis/admin/v1/practices/{practiceId}/staff/{userId}.
func (h *careAdmin) removeStaff(r *http.Request, caller *users.Device, practice string) (any, error) {
	userID, err := h.s.localUser(r.PathValue("userId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{}, h.care.RemoveStaff(r.Context(), caller.UserID, practice, userID)
}

type codeList struct {
	Codes []care.Code `json:"codes"`
}

// listCodes serves GET /_praxis/admin/v1/practices/{practiceId}/codes
// (without the codes themselves, which are stored hashed).
func (h *careAdmin) listCodes(r *http.Request, caller *users.Device, practice string) (any, error) {
	cs, err := h.care.Codes(r.Context(), practice)
	if err != nil {
		return nil, err
	}
	return &codeList{Codes: cs}, nil
}

// createCode serves POST /_praxis/admin/v1/practices/{practiceId}/codes:
// {"kind": "patient"|"practice", "expires_in_ms": N}. The answer carries
// the code, its alias and matrix.to link: the only time the code is shown.
func (h *careAdmin) createCode(r *http.Request, caller *users.Device, practice string) (any, error) {
	var req struct {
		Kind        string `json:"kind"`
		ExpiresInMS int64  `json:"expires_in_ms"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.ExpiresInMS < 0 {
		return nil, httputil.InvalidParam("expires_in_ms must not be negative")
	}
	return h.care.CreateCode(r.Context(), caller.UserID, practice, req.Kind, time.Duration(req.ExpiresInMS)*time.Millisecond)
}

// revokeCode serves DELETE /_praxis/admin/v1/practices/{practiceId}/codes/{codeId}.
func (h *careAdmin) revokeCode(r *http.Request, caller *users.Device, practice string) (any, error) {
	return map[string]any{}, h.care.RevokeCode(r.Context(), caller.UserID, practice, r.PathValue("codeId"))
}

type absenceList struct {
	Absences []care.Absence `json:"absences"`
}

// listAbsences serves GET /_praxis/admin/v1/practices/{practiceId}/absences:
// absences not yet over.
func (h *careAdmin) listAbsences(r *http.Request, caller *users.Device, practice string) (any, error) {
	as, err := h.care.Absences(r.Context(), practice, h.s.now())
	if err != nil {
		return nil, err
	}
	return &absenceList{Absences: as}, nil
}

// addAbsence serves POST /_praxis/admin/v1/practices/{practiceId}/absences:
// {"start_ts", "end_ts", "note"}.
func (h *careAdmin) addAbsence(r *http.Request, caller *users.Device, practice string) (any, error) {
	var req struct {
		StartTS int64  `json:"start_ts"`
		EndTS   int64  `json:"end_ts"`
		Note    string `json:"note"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	return h.care.AddAbsence(r.Context(), caller.UserID, practice, time.UnixMilli(req.StartTS), time.UnixMilli(req.EndTS), req.Note)
}

// deleteAbsence serves DELETE /_praxis/admin/v1/practices/{practiceId}/absences/{absenceId}.
func (h *careAdmin) deleteAbsence(r *http.Request, caller *users.Device, practice string) (any, error) {
	id, err := strconv.ParseInt(r.PathValue("absenceId"), 10, 64)
	if err != nil {
		return nil, httputil.InvalidParam("absence ID must be a number")
	}
	return map[string]any{}, h.care.DeleteAbsence(r.Context(), caller.UserID, practice, id)
}

type couplingList struct {
	Couplings []care.Coupling `json:"couplings"`
}

// listCouplings serves GET /_praxis/admin/v1/practices/{practiceId}/couplings.
func (h *careAdmin) listCouplings(r *http.Request, caller *users.Device, practice string) (any, error) {
	cs, err := h.care.Couplings(r.Context(), practice, "")
	if err != nil {
		return nil, err
	}
	return &couplingList{Couplings: cs}, nil
}

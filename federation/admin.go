package federation

import (
	"context"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
	"praxis/internal/storage"
)

// Authenticate identifies an admin API caller.
type Authenticate func(r *http.Request) (userID string, isAdmin bool, err error)

// Audit appends to the admin audit log inside tx.
type Audit func(ctx context.Context, tx *storage.DB, actor, action, target string, params map[string]any) error

const adminPrefix = "/_praxis/admin/v1/federation"

// AdminRoutes mounts the allowlist endpoints of the admin API, used by
// praxisctl federation allow|deny|list. Changes are audited in the same
// transaction and take effect without a restart.
func (a *Allowlist) AdminRoutes(mux *http.ServeMux, authn Authenticate, audit Audit) {
	mux.Handle("GET "+adminPrefix+"/allowlist", a.adminOnly(authn, func(r *http.Request, _ string) (any, error) {
		entries, err := a.List(r.Context())
		if err != nil {
			return nil, err
		}
		return map[string]any{"servers": entries}, nil
	}))
	change := func(allowed bool) func(r *http.Request, actor string) (any, error) {
		return func(r *http.Request, actor string) (any, error) {
			server := strings.ToLower(r.PathValue("serverName"))
			if server != "*" {
				if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
					return nil, httputil.InvalidParam("not a server name: " + server)
				}
			}
			if server == a.own {
				return nil, httputil.InvalidParam("this is our own server name")
			}
			action := "federation.deny"
			if allowed {
				action = "federation.allow"
			}
			err := a.db.Transact(r.Context(), func(tx *storage.DB) error {
				if err := a.Set(r.Context(), tx, server, allowed, actor); err != nil {
					return err
				}
				if audit != nil {
					return audit(r.Context(), tx, actor, action, server, nil)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			return map[string]any{"server_name": server, "allowed": allowed}, nil
		}
	}
	mux.Handle("PUT "+adminPrefix+"/allowlist/{serverName}", a.adminOnly(authn, change(true)))
	mux.Handle("DELETE "+adminPrefix+"/allowlist/{serverName}", a.adminOnly(authn, change(false)))
}

func (a *Allowlist) adminOnly(authn Authenticate, fn func(r *http.Request, admin string) (any, error)) http.Handler {
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

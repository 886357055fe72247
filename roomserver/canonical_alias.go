package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"praxis/internal/httputil"
)

// CheckCanonicalAlias validates the content of an m.room.canonical_alias
// event a local client sends to roomID, as PUT /rooms/{roomId}/state asks:
// 400 M_INVALID_PARAM for an alias that is not one, 400 M_BAD_ALIAS for a
// local alias that does not exist or points to another room. Aliases of
// other servers are checked for syntax only: looking them up would need
// their server, and a partner being offline must not block the change.
func (s *Service) CheckCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	c := gjson.ParseBytes(content)
	var aliases []string
	switch a := c.Get("alias"); a.Type {
	case gjson.Null: // absent or null: no canonical alias
	case gjson.String:
		if a.Str != "" {
			aliases = append(aliases, a.Str)
		}
	default:
		return httputil.InvalidParam("alias must be a string")
	}
	switch alt := c.Get("alt_aliases"); {
	case alt.Type == gjson.Null:
	case !alt.IsArray():
		return httputil.InvalidParam("alt_aliases must be a list of aliases")
	default:
		for _, a := range alt.Array() {
			if a.Type != gjson.String {
				return httputil.InvalidParam("alt_aliases must be a list of aliases")
			}
			aliases = append(aliases, a.Str)
		}
	}
	for _, alias := range aliases {
		if err := validAlias(alias); err != nil {
			return err
		}
	}
	for _, alias := range aliases {
		if _, server, _ := strings.Cut(alias, ":"); server != s.serverName {
			continue
		}
		target, _, err := s.ResolveAlias(ctx, alias)
		var me spec.MatrixError
		if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
			return httputil.Errorf(http.StatusBadRequest, "M_BAD_ALIAS", "room alias %s does not exist", alias)
		}
		if err != nil {
			return err
		}
		if target != roomID {
			return httputil.Errorf(http.StatusBadRequest, "M_BAD_ALIAS", "room alias %s points to another room", alias)
		}
	}
	return nil
}

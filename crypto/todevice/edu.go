package todevice

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"praxis/internal/httputil"
)

// HandleDirectToDeviceEDU takes an inbound m.direct_to_device EDU and puts
// the messages for local users into their inboxes. The EDU's message_id
// is the idempotency key, so a retried transaction delivers nothing twice.
// The signature matches federation/txn.EDUHandler.
func (s *Service) HandleDirectToDeviceEDU(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var edu struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &edu); err != nil {
		return httputil.BadJSON("malformed m.direct_to_device")
	}
	if _, server, _ := strings.Cut(edu.Sender, ":"); server != string(origin) {
		return httputil.Forbidden(fmt.Sprintf("%s may not send to-device messages as %s", origin, edu.Sender))
	}
	if edu.MessageID == "" {
		return httputil.MissingParam("missing message_id")
	}
	local := map[string]map[string]json.RawMessage{}
	for user, devices := range edu.Messages {
		if strings.HasSuffix(user, ":"+s.serverName) {
			local[user] = devices
		}
	}
	// Remote senders have no device of ours; "" keeps their message IDs
	// apart from local devices' txn IDs.
	return s.Send(ctx, edu.Sender, "", edu.Type, edu.MessageID, local)
}

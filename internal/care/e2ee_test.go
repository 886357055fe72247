package care_test

// The product's acceptance flow with real Olm/Megolm: mautrix-go crypto
// clients (pure-Go goolm, build tag goolm) on the in-process server. The
// server never reads messages, so the claim must work out through who the
// patient's client encrypts for: the staff invited into the coupling room.

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"praxis/internal/care"
	"praxis/internal/hstest"
)

// TestAcceptanceClaimerDecryptsFirstMessage is issue 6's acceptance
// flow: a patient couples with a one-time code from a stock client, the
// request lands on the board, a doctor claims it and reads the patient's
// first, encrypted message; a colleague's later claim is refused and the
// code cannot be used again.
func TestAcceptanceClaimerDecryptsFirstMessage(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drx": care.RoleDoctor, "mfa": care.RoleAssistant})
		drx, mfa := hstest.NewCryptoClient(t, n.staff["drx"]), hstest.NewCryptoClient(t, n.staff["mfa"])
		code := n.code(t, care.CodePatient)
		patient := hstest.NewCryptoClient(t, srv.Register(t, "anna"))

		room := couple(t, patient.Client, code)
		patient.WaitMembers(t, room, patient.UserID, drx.UserID, mfa.UserID)
		first := patient.Send(t, room, "Ich habe seit drei Tagen Fieber")

		var claimed care.Request
		if err := praxis(drx.Client, http.MethodPost, "/board/"+room.String()+"/claim", &claimed); err != nil {
			t.Fatalf("claim: %v", err)
		}
		drx.WaitDecrypt(t, first, "Ich habe seit drei Tagen Fieber")

		err := praxis(mfa.Client, http.MethodPost, "/board/"+room.String()+"/claim", nil)
		if err == nil || !strings.Contains(err.Error(), care.ErrCodeClaimed) {
			t.Errorf("colleague's later claim: %v, want %s", err, care.ErrCodeClaimed)
		}

		// the conversation goes on both ways
		drx.WaitMembers(t, room, patient.UserID, drx.UserID)
		reply := drx.Send(t, room, "Bitte kommen Sie morgen um 9 Uhr")
		patient.WaitDecrypt(t, reply, "Bitte kommen Sie morgen um 9 Uhr")

		// the server holds only ciphertext of the conversation
		rows, err := srv.DB.Query(ctx, `SELECT e.json FROM events e JOIN rooms r ON r.room_nid = e.room_nid WHERE r.room_id = $1`, room.String())
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var js string
			if err := rows.Scan(&js); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(js, "Fieber") || strings.Contains(js, "9 Uhr") {
				t.Fatalf("plaintext in the database: %s", js)
			}
		}

		other := srv.Register(t, "bernd")
		if _, err := other.JoinRoom(ctx, "#couple-"+code+":hs1.test", nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("reusing the one-time code: %v, want M_FORBIDDEN", err)
		}
	}, enforce)
}

package care_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"praxis/internal/admin"
	"praxis/internal/care"
	"praxis/internal/config"
	"praxis/internal/hstest"
	"praxis/roomserver"
)

// enforce runs a test node under the health rules.
var enforce = hstest.WithConfig(func(c *config.Config) { c.Care.Policy = "enforce" })

const root = "@root:hs1.test"

// practiceNode is a node with practice "mueller" and its staff.
type practiceNode struct {
	srv      *hstest.Server
	practice *care.Practice
	staff    map[string]*mautrix.Client
}

// newPractice creates practice id with the given staff (localpart → role),
// each joined to the request board.
func newPractice(t *testing.T, srv *hstest.Server, id string, staff map[string]string) *practiceNode {
	t.Helper()
	ctx := context.Background()
	name := "Praxis " + id
	phone := "0800 123"
	p, err := srv.Care.CreatePractice(ctx, root, id, care.PracticeUpdate{Name: &name, EmergencyPhone: &phone})
	if err != nil {
		t.Fatalf("create practice %s: %v", id, err)
	}
	n := &practiceNode{srv: srv, practice: p, staff: map[string]*mautrix.Client{}}
	for lp, role := range staff {
		c := srv.Register(t, lp)
		if _, err := srv.Care.AddStaff(ctx, root, id, c.UserID.String(), role); err != nil {
			t.Fatalf("add staff %s: %v", lp, err)
		}
		if _, err := c.JoinRoomByID(ctx, id2(p.BoardRoom)); err != nil {
			t.Fatalf("%s joins the board: %v", lp, err)
		}
		n.staff[lp] = c
	}
	return n
}

var (
	couplingType = event.Type{Type: care.CouplingEvent, Class: event.StateEventType}
	requestType  = event.Type{Type: care.RequestEvent, Class: event.StateEventType}
)

func id2(s string) id.RoomID { return id.RoomID(s) }

func (n *practiceNode) code(t *testing.T, kind string) string {
	t.Helper()
	c, err := n.srv.Care.CreateCode(context.Background(), root, n.practice.ID, kind, 0)
	if err != nil {
		t.Fatalf("create %s code: %v", kind, err)
	}
	return c.Code
}

// couple redeems a code from a stock client: POST /join/#couple-<code>.
func couple(t *testing.T, patient *mautrix.Client, code string) id.RoomID {
	t.Helper()
	resp, err := patient.JoinRoom(context.Background(), "#couple-"+code+":hs1.test", nil)
	if err != nil {
		t.Fatalf("%s redeems a code: %v", patient.UserID, err)
	}
	return resp.RoomID
}

// praxis calls one of the /_praxis/client/v1 endpoints.
func praxis(c *mautrix.Client, method, path string, out any) error {
	_, err := c.MakeFullRequest(context.Background(), mautrix.FullRequest{
		Method: method, URL: c.HomeserverURL.String() + "/_praxis/client/v1" + path, RequestJSON: struct{}{}, ResponseJSON: out,
	})
	return err
}

func TestVerifiedCoupling(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "mueller", map[string]string{"drmueller": care.RoleDoctor, "mfa": care.RoleAssistant})
		code := n.code(t, care.CodePatient)
		patient := srv.Register(t, "anna")
		room := couple(t, patient, code)

		// the room: patient joined, on-duty staff invited, encrypted,
		// coupling state verified
		for user, want := range map[string]string{"@anna:hs1.test": "join", "@drmueller:hs1.test": "invite", "@mfa:hs1.test": "invite", n.practice.ServiceUser: "join"} {
			if got, _ := srv.Rooms.Membership(ctx, room.String(), user); got != want {
				t.Errorf("membership of %s = %q, want %q", user, got, want)
			}
		}
		var coupling struct {
			Verified bool   `json:"verified"`
			Method   string `json:"method"`
			Practice string `json:"practice"`
		}
		if err := patient.StateEvent(ctx, room, couplingType, "", &coupling); err != nil {
			t.Fatalf("read coupling state: %v", err)
		}
		if !coupling.Verified || coupling.Method != "patient_code" || coupling.Practice != "mueller" {
			t.Errorf("coupling state = %+v, want verified patient_code of mueller", coupling)
		}
		var enc struct {
			Algorithm string `json:"algorithm"`
		}
		if err := patient.StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != "m.megolm.v1.aes-sha2" {
			t.Errorf("room encryption = %+v (%v), want megolm", enc, err)
		}
		if acc, _ := srv.Users.Account(ctx, "@anna:hs1.test"); acc.Kind != care.KindPatient {
			t.Errorf("anna's kind = %q, want patient", acc.Kind)
		}
		// the patient cannot forge the coupling state
		if _, err := patient.SendStateEvent(ctx, room, couplingType, "", map[string]any{"verified": false}); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("patient rewrites coupling state: %v, want M_FORBIDDEN", err)
		}

		// the one-time code works once
		other := srv.Register(t, "bernd")
		if _, err := other.JoinRoom(ctx, "#couple-"+code+":hs1.test", nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("second use of a one-time code: %v, want M_FORBIDDEN", err)
		}
		if _, err := other.JoinRoom(ctx, "#couple-nosuchcode:hs1.test", nil); hstest.ErrCode(err) != "M_NOT_FOUND" {
			t.Errorf("unknown code: %v, want M_NOT_FOUND", err)
		}

		// the board shows the open request; the claimer joins the room
		var board struct {
			Requests []care.Request `json:"requests"`
		}
		if err := praxis(n.staff["mfa"], http.MethodGet, "/board", &board); err != nil {
			t.Fatalf("read board: %v", err)
		}
		if len(board.Requests) != 1 || board.Requests[0].RoomID != room.String() || board.Requests[0].Status != care.StatusOpen {
			t.Fatalf("board = %+v, want one open request for %s", board.Requests, room)
		}
		var boardState care.Request
		if err := n.staff["mfa"].StateEvent(ctx, id2(n.practice.BoardRoom), requestType, room.String(), &boardState); err != nil || boardState.Status != "open" {
			t.Errorf("board room state = %+v (%v), want open", boardState, err)
		}
		var claimed care.Request
		if err := praxis(n.staff["drmueller"], http.MethodPost, "/board/"+room.String()+"/claim", &claimed); err != nil {
			t.Fatalf("claim: %v", err)
		}
		if claimed.Status != care.StatusClaimed || claimed.ClaimedBy != "@drmueller:hs1.test" {
			t.Errorf("claimed = %+v", claimed)
		}
		if got, _ := srv.Rooms.Membership(ctx, room.String(), "@drmueller:hs1.test"); got != "join" {
			t.Errorf("claimer's membership = %q, want join", got)
		}
		err := praxis(n.staff["mfa"], http.MethodPost, "/board/"+room.String()+"/claim", nil)
		if hstest.ErrCode(err) != care.ErrCodeClaimed && !strings.Contains(err.Error(), care.ErrCodeClaimed) {
			t.Errorf("second claim: %v, want %s", err, care.ErrCodeClaimed)
		}
		if err := praxis(patient, http.MethodPost, "/board/"+room.String()+"/claim", nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("patient claims: %v, want M_FORBIDDEN", err)
		}
	}, enforce)
}

func TestPracticeCodeCouplingsAreSeparateAndUnverified(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "gp", map[string]string{"doc": care.RoleDoctor})
		code := n.code(t, care.CodePractice)
		anna, bernd := srv.Register(t, "anna"), srv.Register(t, "bernd")
		r1, r2 := couple(t, anna, code), couple(t, bernd, code)
		if r1 == r2 {
			t.Fatal("two patients share one coupling room")
		}
		if got, _ := srv.Rooms.Membership(ctx, r1.String(), "@bernd:hs1.test"); got != "" {
			t.Errorf("bernd's membership in anna's room = %q, want none", got)
		}
		c, _ := srv.Care.CouplingOf(ctx, r1.String())
		if c == nil || c.Verified || c.Method != "practice_code" {
			t.Fatalf("coupling via practice code = %+v, want unverified", c)
		}
		// patients cannot verify themselves; staff can, audited
		if err := praxis(anna, http.MethodPost, "/couplings/"+r1.String()+"/verify", nil); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("patient verifies: %v, want M_FORBIDDEN", err)
		}
		if err := praxis(n.staff["doc"], http.MethodPost, "/couplings/"+r1.String()+"/verify", nil); err != nil {
			t.Fatalf("staff verifies: %v", err)
		}
		var st struct {
			Verified bool `json:"verified"`
		}
		if err := anna.StateEvent(ctx, r1, couplingType, "", &st); err != nil || !st.Verified {
			t.Errorf("coupling state after verify = %+v (%v)", st, err)
		}
		if c, _ := srv.Care.CouplingOf(ctx, r2.String()); c.Verified {
			t.Error("verifying anna's coupling verified bernd's")
		}
		entries, _, err := srv.Admin.Audit().List(ctx, adminAuditQuery("coupling.verify"))
		if err != nil || len(entries) != 1 || entries[0].Actor != "@doc:hs1.test" || entries[0].Practice != "gp" {
			t.Errorf("audit of verify = %+v (%v)", entries, err)
		}
		// a renamed practice shows its new name in the patients' rooms
		newName := "Gemeinschaftspraxis"
		if _, err := srv.Care.UpdatePractice(ctx, root, "gp", care.PracticeUpdate{Name: &newName}); err != nil {
			t.Fatal(err)
		}
		var member struct {
			DisplayName string `json:"displayname"`
		}
		if err := anna.StateEvent(ctx, r1, event.StateMember, n.practice.ServiceUser, &member); err != nil || member.DisplayName != newName {
			t.Errorf("service account's member event = %+v (%v), want %q", member, err, newName)
		}

		// scanning again leads back to the same room; a one-time code from
		// the desk verifies the existing coupling
		if again := couple(t, bernd, code); again != r2 {
			t.Errorf("bernd scans the flyer again: room %s, want his room %s", again, r2)
		}
		if again := couple(t, bernd, n.code(t, care.CodePatient)); again != r2 {
			t.Errorf("bernd redeems a one-time code: room %s, want his room %s", again, r2)
		}
		if c, _ := srv.Care.CouplingOf(ctx, r2.String()); !c.Verified || c.VerifiedBy != "@bernd:hs1.test" {
			t.Errorf("after a one-time code bernd's coupling = %+v, want verified", c)
		}
		if cs, _ := srv.Care.Couplings(ctx, "", "@bernd:hs1.test"); len(cs) != 1 {
			t.Errorf("bernd has %d couplings, want 1", len(cs))
		}

		// a patient leaving un-couples
		if _, err := anna.LeaveRoom(ctx, r1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "coupling to end", func() bool {
			c, _ := srv.Care.CouplingOf(ctx, r1.String())
			return c.EndedTS != 0
		})
	}, enforce)
}

func TestConcurrentClaimsOneWins(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		staff := map[string]string{}
		names := []string{"s1", "s2", "s3", "s4", "s5", "s6"}
		for _, s := range names {
			staff[s] = care.RoleAssistant
		}
		n := newPractice(t, srv, "team", staff)
		room := couple(t, srv.Register(t, "anna"), n.code(t, care.CodePatient))
		var wg sync.WaitGroup
		errs := make([]error, len(names))
		for i, s := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = praxis(n.staff[s], http.MethodPost, "/board/"+room.String()+"/claim", nil)
			}()
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !strings.Contains(err.Error(), care.ErrCodeClaimed):
				t.Errorf("%s: %v, want success or %s", names[i], err, care.ErrCodeClaimed)
			}
		}
		if won != 1 {
			t.Errorf("%d claims won, want exactly 1", won)
		}
	}, enforce)
}

func adminAuditQuery(action string) admin.AuditQuery {
	return admin.AuditQuery{Action: action}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOffDutyClaimAndRemoval: off-duty staff are not invited into new
// coupling rooms but may still claim (and are then brought in); removed
// staff leave the board and every coupling room of the practice.
func TestOffDutyClaimAndRemoval(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "nacht", map[string]string{"doc": care.RoleDoctor})
		off := false
		if _, err := srv.Care.SetStaff(ctx, root, "nacht", "@doc:hs1.test", nil, &off); err != nil {
			t.Fatal(err)
		}
		room := couple(t, srv.Register(t, "anna"), n.code(t, care.CodePatient))
		if m, _ := srv.Rooms.Membership(ctx, room.String(), "@doc:hs1.test"); m != "" {
			t.Errorf("off-duty doctor's membership = %q, want none", m)
		}
		if err := praxis(n.staff["doc"], http.MethodPost, "/board/"+room.String()+"/claim", nil); err != nil {
			t.Fatalf("claim: %v", err)
		}
		if m, _ := srv.Rooms.Membership(ctx, room.String(), "@doc:hs1.test"); m != "join" {
			t.Errorf("claimer's membership = %q, want join", m)
		}
		if err := srv.Care.RemoveStaff(ctx, root, "nacht", "@doc:hs1.test"); err != nil {
			t.Fatal(err)
		}
		for _, r := range []string{room.String(), n.practice.BoardRoom} {
			if m, _ := srv.Rooms.Membership(ctx, r, "@doc:hs1.test"); m != "leave" {
				t.Errorf("former staff's membership in %s = %q, want leave", r, m)
			}
		}
		if acc, _ := srv.Users.Account(ctx, "@doc:hs1.test"); acc.Kind != care.KindUser {
			t.Errorf("former staff's kind = %q, want user", acc.Kind)
		}
	}, enforce)
}

// TestConcurrentRedeemOfOneTimeCode: two patients racing for one
// single-use code: exactly one gets a room.
func TestConcurrentRedeemOfOneTimeCode(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		n := newPractice(t, srv, "race", map[string]string{"doc": care.RoleDoctor})
		code := n.code(t, care.CodePatient)
		patients := []*mautrix.Client{srv.Register(t, "p1"), srv.Register(t, "p2"), srv.Register(t, "p3")}
		errs := make([]error, len(patients))
		var wg sync.WaitGroup
		for i, p := range patients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = p.JoinRoom(context.Background(), "#couple-"+code+":hs1.test", nil)
			}()
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case hstest.ErrCode(err) != "M_FORBIDDEN":
				t.Errorf("patient %d: %v, want success or M_FORBIDDEN", i+1, err)
			}
		}
		if won != 1 {
			t.Errorf("%d patients coupled with one single-use code, want 1", won)
		}
		cs, err := srv.Care.Couplings(context.Background(), "race", "")
		if err != nil || len(cs) != 1 {
			t.Errorf("couplings = %+v (%v), want 1", cs, err)
		}
	}, enforce)
}

// TestAcceptingTheInviteClaims: with a stock client, staff pick a request
// up by accepting the coupling room's invite; the colleagues' invites are
// then withdrawn, and the board shows who claimed it.
func TestAcceptingTheInviteClaims(t *testing.T) {
	hstest.Each(t, func(t *testing.T, srv *hstest.Server) {
		ctx := context.Background()
		n := newPractice(t, srv, "stock", map[string]string{"a1": care.RoleAssistant, "a2": care.RoleAssistant})
		room := couple(t, srv.Register(t, "anna"), n.code(t, care.CodePatient))
		if _, err := n.staff["a1"].JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("a1 accepts the invite: %v", err)
		}
		var req care.Request
		if err := n.staff["a2"].StateEvent(ctx, id2(n.practice.BoardRoom), requestType, room.String(), &req); err != nil {
			t.Fatal(err)
		}
		if req.Status != care.StatusClaimed || req.ClaimedBy != "@a1:hs1.test" {
			t.Errorf("board entry = %+v, want claimed by a1", req)
		}
		if m, _ := srv.Rooms.Membership(ctx, room.String(), "@a2:hs1.test"); m != "leave" {
			t.Errorf("a2's invite after a1's claim: membership %q, want leave (withdrawn)", m)
		}
		if _, err := n.staff["a2"].JoinRoomByID(ctx, room); hstest.ErrCode(err) != "M_FORBIDDEN" {
			t.Errorf("a2 joins after the claim: %v, want M_FORBIDDEN", err)
		}
		// closed and reopened by the patient's next message: open again
		if err := praxis(n.staff["a1"], http.MethodPost, "/board/"+room.String()+"/close", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{RoomID: room.String(), Sender: "@anna:hs1.test", Type: "m.room.message",
			Content: []byte(`{"msgtype":"m.text","body":"noch eine Frage"}`)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the request to reopen", func() bool {
			var r care.Request
			_ = n.staff["a2"].StateEvent(ctx, id2(n.practice.BoardRoom), requestType, room.String(), &r)
			return r.Status == care.StatusOpen
		})
	}, enforce)
}

package users

import (
	"context"
	"errors"
	"slices"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"praxis/internal/storage"
	"praxis/internal/storage/storagetest"
)

func TestListAccounts(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, "hs.test")
		s.SetBcryptCost(bcrypt.MinCost)
		for _, a := range []struct {
			local, display string
			admin          bool
		}{{"anna", "Dr. Anna Weber", true}, {"ben", "Ben", false}, {"carla", "100%_sure", false}, {"dora", "", false}, {"emil", "Emil", false}} {
			if _, err := s.CreateAccount(ctx, a.local, "pw", a.admin, "user"); err != nil {
				t.Fatal(err)
			}
			if a.display != "" {
				if _, err := s.SetDisplayName(ctx, s.UserID(a.local), a.display); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Deactivate(ctx, "@emil:hs.test"); err != nil {
			t.Fatal(err)
		}
		yes, no := true, false
		for _, tc := range []struct {
			name  string
			q     AccountQuery
			want  []string
			total int
		}{
			{"active by name", AccountQuery{}, []string{"anna", "ben", "carla", "dora"}, 4},
			{"with deactivated", AccountQuery{Deactivated: true}, []string{"anna", "ben", "carla", "dora", "emil"}, 5},
			{"page", AccountQuery{From: 1, Limit: 2}, []string{"ben", "carla"}, 4},
			{"backwards", AccountQuery{Backwards: true, Limit: 2}, []string{"dora", "carla"}, 4},
			{"name matches display name, any case", AccountQuery{Name: "WEBER"}, []string{"anna"}, 1},
			{"name matches localpart", AccountQuery{Name: "or"}, []string{"dora"}, 1},
			{"LIKE wildcards are literal", AccountQuery{Name: "0%_"}, []string{"carla"}, 1},
			{"underscore is no wildcard", AccountQuery{Name: "b_n"}, []string{}, 0},
			{"user ID substring", AccountQuery{UserID: "en:hs"}, []string{"ben"}, 1},
			{"admins", AccountQuery{Admins: &yes}, []string{"anna"}, 1},
			{"non-admins", AccountQuery{Admins: &no}, []string{"ben", "carla", "dora"}, 3},
			{"by admin flag, descending", AccountQuery{OrderBy: "admin", Backwards: true, Limit: 1}, []string{"anna"}, 4},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, total, err := s.ListAccounts(ctx, tc.q)
				if err != nil {
					t.Fatal(err)
				}
				names := []string{}
				for _, a := range got {
					names = append(names, a.Localpart)
				}
				if !slices.Equal(names, tc.want) || total != tc.total {
					t.Errorf("ListAccounts(%+v) = %v (total %d), want %v (total %d)", tc.q, names, total, tc.want, tc.total)
				}
			})
		}
	})
}

func TestSetAdminAndReactivate(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, "hs.test")
		s.SetBcryptCost(bcrypt.MinCost)
		if _, err := s.CreateAccount(ctx, "fay", "pw", false, "user"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAdmin(ctx, "@fay:hs.test", true); err != nil {
			t.Fatal(err)
		}
		if a, _ := s.Account(ctx, "@fay:hs.test"); !a.IsAdmin {
			t.Error("SetAdmin(true) did not stick")
		}
		if err := s.SetAdmin(ctx, "@nobody:hs.test", true); !errors.Is(err, ErrNotFound) {
			t.Errorf("SetAdmin on an unknown user: %v, want ErrNotFound", err)
		}
		if err := s.Deactivate(ctx, "@fay:hs.test"); err != nil {
			t.Fatal(err)
		}
		if err := s.Reactivate(ctx, "@fay:hs.test"); err != nil {
			t.Fatal(err)
		}
		if a, _ := s.Account(ctx, "@fay:hs.test"); a.Deactivated {
			t.Error("Reactivate did not clear the flag")
		}
		// Deactivation removed the password: no login until a new one is set.
		if err := s.CheckPassword(ctx, "@fay:hs.test", "pw"); err == nil {
			t.Error("the old password works after reactivation")
		}
	})
}

func TestWithTxRollsBack(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := New(db, "hs.test")
		s.SetBcryptCost(bcrypt.MinCost)
		boom := errors.New("the action failed")
		err := db.Transact(ctx, func(tx *storage.DB) error {
			if _, err := s.WithTx(tx).CreateAccount(ctx, "gus", "pw", true, "user"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("transaction: %v", err)
		}
		if _, err := s.Account(ctx, "@gus:hs.test"); !errors.Is(err, ErrNotFound) {
			t.Errorf("account created in a rolled-back transaction: %v", err)
		}
	})
}

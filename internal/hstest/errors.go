package hstest

import (
	"errors"

	"maunium.net/go/mautrix"
)

func asHTTPError(err error, target *mautrix.HTTPError) bool {
	return errors.As(err, target)
}

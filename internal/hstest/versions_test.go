package hstest_test

import "maunium.net/go/mautrix"

var mautrixV111 = mautrix.SpecV111

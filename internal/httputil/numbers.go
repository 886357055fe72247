package httputil

import "strconv"

// FiniteNumbers reports whether every number in valid JSON fits a float64.
// encoding/json and gomatrixserverlib decode event content into float64,
// so a number such as 1e999 passes json.Valid and then fails deep in event
// building: without this check a client error would become a 500.
func FiniteNumbers(b []byte) bool {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			continue
		}
		if c != '-' && (c < '0' || c > '9') {
			continue
		}
		start, exp := i, false
		for i < len(b) && (b[i] == '-' || b[i] == '+' || b[i] == '.' || b[i] == 'e' || b[i] == 'E' || b[i] >= '0' && b[i] <= '9') {
			exp = exp || b[i] == 'e' || b[i] == 'E'
			i++
		}
		// Only an exponent or more than 300 digits can leave float64's
		// range; the common case costs no parse.
		if exp || i-start > 300 {
			if _, err := strconv.ParseFloat(string(b[start:i]), 64); err != nil {
				return false
			}
		}
		i--
	}
	return true
}

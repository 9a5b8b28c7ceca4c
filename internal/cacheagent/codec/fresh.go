package codec

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// FreshMarker starts a value filled from an origin: it is followed by the time the value stops
// being fresh (Unix milliseconds, 16 decimal digits, so a Lua script can read it too) and the
// stored value (compressed or not). Such a value outlives its freshness in L2 by the policy's
// stale windows; readers decide from the stamp whether to answer it, refresh it, or both.
const FreshMarker = reserved + "o"

const stampDigits = 16

// Stamp marks stored (already encoded) as fresh until the given time.
func Stamp(freshUntil time.Time, stored string) string {
	return FreshMarker + fmt.Sprintf("%0*d", stampDigits, freshUntil.UnixMilli()) + stored
}

// Unstamp splits a stamped value into its freshness deadline and stored value; ok is false
// for a value that is not stamped (written by a client: fresh for as long as it exists).
func Unstamp(v string) (freshUntil time.Time, stored string, ok bool) {
	if !strings.HasPrefix(v, FreshMarker) || len(v) < len(FreshMarker)+stampDigits {
		return time.Time{}, v, false
	}
	ms, err := strconv.ParseInt(v[len(FreshMarker):len(FreshMarker)+stampDigits], 10, 64)
	if err != nil {
		return time.Time{}, v, false
	}
	return time.UnixMilli(ms), v[len(FreshMarker)+stampDigits:], true
}

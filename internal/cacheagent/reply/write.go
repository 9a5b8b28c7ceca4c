// Package reply writes a shard's answer to a client as Valkey would have written it: typed
// replies through valkey-go's messages (decoding values the agent encoded), and replies the
// agent only relays byte-faithfully (Relay: map order, simple versus bulk strings, doubles,
// an error's own text).
package reply

import (
	"errors"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Write writes a shard's reply as the client expects it. status names replies that are
// simple strings (+OK) rather than bulk strings.
func Write(w *resp.Writer, r valkey.ValkeyResult, status bool) {
	msg, err := r.ToMessage()
	if err != nil {
		if valkey.IsValkeyNil(err) {
			w.Null()
			return
		}
		if ve, ok := valkey.IsValkeyErr(err); ok {
			if msg.Error() != nil {
				w.Error(ShardErrorText(&msg))
			} else {
				// The shard refused setting up the connection (a BUSY shard refuses CLIENT
				// TRACKING): its error is the reply, with its code.
				w.Error(ErrorWithCode(ve.Error()))
			}
			return
		}
		WriteErr(w, err)
		return
	}
	WriteMessage(w, &msg, status)
}

// ShardErrorText is an error reply's text as the shard sent it: valkey-go's error values drop
// a leading "ERR ", the message itself keeps it (see rawReply).
func ShardErrorText(m *valkey.ValkeyMessage) string {
	if n, err := rawReply(m); err == nil && (n.typ == '-' || n.typ == '!') {
		return n.str
	}
	if err := m.Error(); err != nil {
		return "ERR " + err.Error()
	}
	return "ERR unreadable error reply from the shard"
}

// ErrorWithCode is an error text with its code: valkey-go's texts drop a leading "ERR ".
func ErrorWithCode(text string) string {
	code, _, _ := strings.Cut(text, " ")
	if code == "" || strings.ToUpper(code) != code {
		return "ERR " + text
	}
	return text
}

// WriteMessage writes a shard's typed reply; status names simple strings, as in Write.
func WriteMessage(w *resp.Writer, m *valkey.ValkeyMessage, status bool) {
	switch {
	case m.IsNil():
		w.Null()
	case m.IsInt64():
		n, _ := m.AsInt64()
		w.Int(n)
	case m.IsString():
		s, _ := m.ToString()
		if status {
			w.Simple(s)
		} else if v, present := Readable(s); present {
			w.BulkString(v)
		} else {
			w.Null()
		}
	case m.IsArray():
		arr, _ := m.ToArray()
		w.Array(len(arr))
		for i := range arr {
			WriteMessage(w, &arr[i], false)
		}
	case m.IsFloat64():
		f, _ := m.AsFloat64()
		w.BulkString(strconv.FormatFloat(f, 'g', -1, 64))
	case m.IsBool():
		b, _ := m.AsBool()
		if b {
			w.Int(1)
		} else {
			w.Int(0)
		}
	default:
		if m.Error() != nil {
			w.Error(ShardErrorText(m))
			return
		}
		s, _ := m.ToString()
		w.BulkString(s)
	}
}

// Readable is what a client gets for a value read from L2; present is false for a key
// recorded as absent at the origin (negative cache), which reads as nil. An origin-filled
// value's freshness stamp is the agent's, never the client's.
func Readable(value string) (v string, present bool) {
	_, value, _ = codec.Unstamp(value)
	if value == codec.Absent {
		return "", false
	}
	return codec.Decode(value, MaxDecodedBytes), true
}

// MaxDecodedBytes is the API's largest maxValueSize: no agent wrote a larger value.
const MaxDecodedBytes = 512 << 20

// WriteErr writes err as an error reply: a down shard's CFDOWN, a shard's error with its
// code, or an agent error as ERR.
func WriteErr(w *resp.Writer, err error) {
	var down *router.DownError
	if errors.As(err, &down) {
		w.Error(down.Error())
		return
	}
	if ve, ok := valkey.IsValkeyErr(err); ok {
		w.Error(ve.Error())
		return
	}
	w.Error("ERR " + err.Error())
}

package server

import (
	"errors"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// writeResult writes a shard's reply as the client expects it. status names replies that are
// simple strings (+OK) rather than bulk strings.
func writeResult(w *resp.Writer, r valkey.ValkeyResult, status bool) {
	msg, err := r.ToMessage()
	if err != nil {
		if valkey.IsValkeyNil(err) {
			w.Null()
			return
		}
		if ve, ok := valkey.IsValkeyErr(err); ok {
			if msg.Error() != nil {
				w.Error(shardErrorText(&msg))
			} else {
				// The shard refused setting up the connection (a BUSY shard refuses CLIENT
				// TRACKING): its error is the reply, with its code.
				w.Error(errorWithCode(ve.Error()))
			}
			return
		}
		writeErr(w, err)
		return
	}
	writeMessage(w, &msg, status)
}

// shardErrorText is an error reply's text as the shard sent it: valkey-go's error values drop
// a leading "ERR ", the message itself keeps it (see rawReply).
func shardErrorText(m *valkey.ValkeyMessage) string {
	if n, err := rawReply(m); err == nil && (n.typ == '-' || n.typ == '!') {
		return n.str
	}
	if err := m.Error(); err != nil {
		return "ERR " + err.Error()
	}
	return "ERR unreadable error reply from the shard"
}

// errorWithCode is an error text with its code: valkey-go's texts drop a leading "ERR ".
func errorWithCode(text string) string {
	code, _, _ := strings.Cut(text, " ")
	if code == "" || strings.ToUpper(code) != code {
		return "ERR " + text
	}
	return text
}

func writeMessage(w *resp.Writer, m *valkey.ValkeyMessage, status bool) {
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
		} else if v, present := readable(s); present {
			w.BulkString(v)
		} else {
			w.Null()
		}
	case m.IsArray():
		arr, _ := m.ToArray()
		w.Array(len(arr))
		for i := range arr {
			writeMessage(w, &arr[i], false)
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
			w.Error(shardErrorText(m))
			return
		}
		s, _ := m.ToString()
		w.BulkString(s)
	}
}

// stored is what goes to L2 for a value written under rules (compressed if the policy says so).
func stored(rules policy.Rules, value string) string {
	return codec.Encode(rules.Compression, rules.CompressionMinSize, value)
}

// readable is what a client gets for a value read from L2; present is false for a key
// recorded as absent at the origin (negative cache), which reads as nil. An origin-filled
// value's freshness stamp is the agent's, never the client's.
func readable(value string) (v string, present bool) {
	_, value, _ = codec.Unstamp(value)
	if value == codec.Absent {
		return "", false
	}
	return codec.Decode(value, maxDecodedBytes), true
}

// maxDecodedBytes is the API's largest maxValueSize: no agent wrote a larger value.
const maxDecodedBytes = 512 << 20

func writeErr(w *resp.Writer, err error) {
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

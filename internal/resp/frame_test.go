package resp

import (
	"strings"
	"testing"
)

func TestReplyLenFindsWholeRepliesOnly(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"+OK\r\n", 5, false},
		{"+OK\r\n+OK\r\n", 5, false},
		{"-ERR wrong\r\n", 12, false},
		{":12\r\n", 5, false},
		{"$-1\r\n", 5, false},
		{"$3\r\nfoo\r\n", 9, false},
		{"$0\r\n\r\n", 6, false},
		{"*-1\r\n", 5, false},
		{"*2\r\n$1\r\na\r\n:1\r\n", 15, false},
		{"*1\r\n*1\r\n+x\r\n", 12, false},
		{"_\r\n", 3, false},
		{",1.5\r\n#t\r\n", 6, false},
		{"(12345678901234567890\r\n", 23, false},
		{"=8\r\ntxt:abcd\r\n", 14, false},
		{"!3\r\nbad\r\n", 9, false},
		{"%1\r\n+a\r\n:1\r\n", 12, false},
		{"~2\r\n+a\r\n_\r\n", 11, false},
		{">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n", 32, false},
		{"|1\r\n+ttl\r\n:3\r\n+OK\r\n", 19, false},
		{"%1\r\n+a\r\n", 0, false},
		{"|1\r\n+ttl\r\n:3\r\n", 0, false},
		{"", 0, false},
		{"+OK\r", 0, false},
		{"$3\r\nfo", 0, false},
		{"$3\r\nfoo\r", 0, false},
		{"*2\r\n$1\r\na\r\n", 0, false},
		{"$3\r\nfooXY", 0, true},                // no CRLF after the value
		{"+OK\rX", 0, true},                     // CR without LF
		{"?what\r\n", 0, true},                  // not a RESP type
		{"$x\r\n", 0, true},                     // not a length
		{"$999999999999\r\n", 0, true},          // past any value
		{strings.Repeat("*1\r\n", 40), 0, true}, // nested too deep
		{"+" + strings.Repeat("a", maxLine+1), 0, true},
	} {
		got, err := FrameLen([]byte(tc.in))
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("FrameLen(%.40q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestBulkAndIntValuesOfWholeReplies(t *testing.T) {
	for in, want := range map[string]string{"$3\r\nfoo\r\n": "foo", "$0\r\n\r\n": "", "$-1\r\n": "<nil>", "_\r\n": "<nil>", ":3\r\n": "<nil>", "+OK\r\n": "<nil>"} {
		got := "<nil>"
		if v := BulkValue([]byte(in)); v != nil {
			got = string(v)
		}
		if got != want {
			t.Errorf("BulkValue(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]int64{":1500\r\n": 1500, ":-2\r\n": -2, ":0\r\n": 0} {
		if n, ok := IntValue([]byte(in)); !ok || n != want {
			t.Errorf("IntValue(%q) = %d, %v", in, n, ok)
		}
	}
	for _, in := range []string{"$1\r\n1\r\n", "-ERR x\r\n", ":x\r\n"} {
		if _, ok := IntValue([]byte(in)); ok {
			t.Errorf("IntValue(%q) read an integer", in)
		}
	}
}

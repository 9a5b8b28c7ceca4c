package server

import (
	"strings"
	"testing"
)

func TestScanGetMatchesWholeGETFramesOnly(t *testing.T) {
	for _, tc := range []struct {
		in   string
		key  string
		size int
	}{
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", "foo", 22},
		{"*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n*1\r\n", "foo", 22},
		{"*2\r\n$3\r\nGeT\r\n$0\r\n\r\n", "", 19},
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r", "", 0},              // incomplete
		{"*2\r\n$3\r\nGET\r\n$4\r\nfoo\r\n", "", 0},            // length beyond the data
		{"*2\r\n$3\r\nGET\r\n$3\r\nfooX\n", "", 0},             // no CRLF after the key
		{"*2\r\n$3\r\nSET\r\n$3\r\nfoo\r\n", "", 0},            // another command
		{"*3\r\n$3\r\nGET\r\n$3\r\nfoo\r\n$1\r\nx\r\n", "", 0}, // wrong arity: the full parser's error
		{"GET foo\r\n", "", 0},                                 // inline form
		{"*2\r\n$3\r\nGET\r\n$" + strings.Repeat("9", 12) + "\r\n", "", 0},
	} {
		key, size := scanGet([]byte(tc.in))
		if string(key) != tc.key || size != tc.size {
			t.Errorf("scanGet(%q) = %q, %d; want %q, %d", tc.in, key, size, tc.key, tc.size)
		}
	}
}

func TestDeepPipelinesGoToTheGoroutine(t *testing.T) {
	get := "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
	for n, deep := range map[int]bool{1: false, maxInlinePipeline: false, maxInlinePipeline + 1: true, 16: true} {
		var gets [maxInlinePipeline]getFrame
		if _, got := scanGets([]byte(strings.Repeat(get, n)), &gets); got != deep {
			t.Errorf("%d GETs: deep = %v, want %v", n, got, deep)
		}
	}
}

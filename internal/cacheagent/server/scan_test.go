package server

import (
	"io"
	"strings"
	"testing"
)

func TestScanFrameMatchesWholeGETAndSETFramesOnly(t *testing.T) {
	for _, tc := range []struct {
		in       string
		cmd      string // "" when nothing matches
		key, val string
		size     int
	}{
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", "get", "foo", "", 22},
		{"*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n*1\r\n", "get", "foo", "", 22},
		{"*2\r\n$3\r\nGeT\r\n$0\r\n\r\n", "get", "", "", 19},
		{"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "set", "foo", "bar", 31},
		{"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n", "set", "k", "", 26},
		{"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$4\r\nbar\r\n", "", "", "", 0},         // value beyond the data
		{"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n", "", "", "", 0}, // options: the full path
		{"*2\r\n$3\r\nSET\r\n$3\r\nfoo\r\n", "", "", "", 0},                      // SET without a value
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r", "", "", "", 0},                        // incomplete
		{"*2\r\n$3\r\nGET\r\n$4\r\nfoo\r\n", "", "", "", 0},                      // length beyond the data
		{"*2\r\n$3\r\nGET\r\n$3\r\nfooX\n", "", "", "", 0},                       // no CRLF after the key
		{"*2\r\n$3\r\nDEL\r\n$3\r\nfoo\r\n", "", "", "", 0},                      // another command
		{"*2\r\n$4\r\nGETX\r\n$3\r\nfoo\r\n", "", "", "", 0},                     // a longer name
		{"*3\r\n$3\r\nGET\r\n$3\r\nfoo\r\n$1\r\nx\r\n", "", "", "", 0},           // wrong arity: the full parser's error
		{"GET foo\r\n", "", "", "", 0},                                           // inline form
		{"*2\r\n$3\r\nGET\r\n$" + strings.Repeat("9", 12) + "\r\n", "", "", "", 0},
	} {
		var f frame
		ok := scanFrame([]byte(tc.in), &f)
		cmd := ""
		if ok {
			cmd = f.cmd.name
		}
		if cmd != tc.cmd || (ok && (string(f.key) != tc.key || string(f.val) != tc.val || len(f.raw) != tc.size)) {
			t.Errorf("scanFrame(%q) = %v %q %q %q %d; want %q %q %q %d", tc.in, ok, cmd, f.key, f.val, len(f.raw), tc.cmd, tc.key, tc.val, tc.size)
		}
	}
}

func TestDeepPipelinesGoToTheGoroutine(t *testing.T) {
	get := "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
	for n, deep := range map[int]bool{1: false, maxLoopPipeline: false, maxLoopPipeline + 1: true, 200: true} {
		var frames [maxLoopPipeline]frame
		if _, got := scanFrames([]byte(strings.Repeat(get, n)), &frames); got != deep {
			t.Errorf("%d GETs: deep = %v, want %v", n, got, deep)
		}
	}
}

func TestKeptReadKeepsValuesAndMissesOnly(t *testing.T) {
	for _, tc := range []struct {
		get, pttl string
		val       string
		isNil     bool
		ms        int64
		ok        bool
	}{
		{"$2\r\nv1\r\n", ":1500\r\n", "v1", false, 1500, true},
		{"$0\r\n\r\n", ":-1\r\n", "", false, -1, true},
		{"_\r\n", ":-2\r\n", "", true, -2, true},
		{"$3\r\n\xffab\r\n", ":10\r\n", "", false, 0, false},         // encoded: the full path decodes it
		{"-WRONGTYPE Operation\r\n", ":-1\r\n", "", false, 0, false}, // an error is not kept
		{"-LOADING busy\r\n", "-LOADING busy\r\n", "", false, 0, false},
		{"$2\r\nv1\r\n", "-ERR x\r\n", "", false, 0, false}, // no TTL: not kept
	} {
		k, ms, ok := keptRead([]byte(tc.get), []byte(tc.pttl))
		if ok != tc.ok || (ok && (k.Val != tc.val || k.Nil != tc.isNil || ms != tc.ms)) {
			t.Errorf("keptRead(%q, %q) = %+v, %d, %v", tc.get, tc.pttl, k, ms, ok)
		}
	}
}

func TestAReadWhoseCachingWasRefusedIsNotKept(t *testing.T) {
	for reply, untracked := range map[string]bool{"+OK\r\n": false, "-ERR tracking is off\r\n": true, "": true} {
		q := &fwdReq{}
		q.caching.q = q
		var err error
		if reply == "" {
			err = io.EOF // the connection ended
		}
		q.caching.Reply([]byte(reply), err)
		if q.untracked != untracked {
			t.Errorf("CLIENT CACHING YES answered %q (%v): untracked = %v", reply, err, q.untracked)
		}
	}
}

package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// mgetFrame is an MGET frame of n keys k0, k1, ... and declaring declared arguments.
func mgetFrame(n, declared int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n$4\r\nMGET\r\n", declared)
	for i := range n {
		k := strconv.Itoa(i)
		fmt.Fprintf(&b, "$%d\r\nk%s\r\n", len(k)+1, k)
	}
	return b.String()
}

func TestScanFrameMatchesWholeGETSETAndMGETFramesOnly(t *testing.T) {
	for _, tc := range []struct {
		in       string
		cmd      string // "" when nothing matches
		key, val string
		size     int
		keys     int // an MGET's
	}{
		{"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n", "mget", "a", "", 29, 2},
		{"*2\r\n$4\r\nmget\r\n$1\r\na\r\n*2\r\n", "mget", "a", "", 21, 1},
		{mgetFrame(9, 10), "mget", "k0", "", len(mgetFrame(9, 10)), 9}, // two digits
		{mgetFrame(maxInlineMgetKeys, maxInlineMgetKeys+1), "mget", "k0", "", len(mgetFrame(maxInlineMgetKeys, maxInlineMgetKeys+1)), maxInlineMgetKeys},
		{mgetFrame(maxInlineMgetKeys+1, maxInlineMgetKeys+2), "", "", "", 0, 0}, // larger: the full path
		{mgetFrame(99, 100), "", "", "", 0, 0},                                  // three digits
		{mgetFrame(1, 3), "", "", "", 0, 0},                                     // a key short
		{"*1\r\n$4\r\nMGET\r\n*1\r\n$4\r\nPING\r\n", "", "", "", 0, 0},          // no key: the full parser's error
		{"*\r\n$4\r\nMGET\r\n$1\r\na\r\n", "", "", "", 0, 0},                    // no count
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", "get", "foo", "", 22, 0},
		{"*2\r\n$3\r\nget\r\n$3\r\nfoo\r\n*1\r\n", "get", "foo", "", 22, 0},
		{"*2\r\n$3\r\nGeT\r\n$0\r\n\r\n", "get", "", "", 19, 0},
		{"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n", "set", "foo", "bar", 31, 0},
		{"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$0\r\n\r\n*2\r\n", "set", "k", "", 26, 0},
		{"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$4\r\nbar\r\n", "", "", "", 0, 0},         // value beyond the data
		{"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nNX\r\n", "", "", "", 0, 0}, // options: the full path
		{"*2\r\n$3\r\nSET\r\n$3\r\nfoo\r\n", "", "", "", 0, 0},                      // SET without a value
		{"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r", "", "", "", 0, 0},                        // incomplete
		{"*2\r\n$3\r\nGET\r\n$4\r\nfoo\r\n", "", "", "", 0, 0},                      // length beyond the data
		{"*2\r\n$3\r\nGET\r\n$3\r\nfooX\n", "", "", "", 0, 0},                       // no CRLF after the key
		{"*2\r\n$3\r\nDEL\r\n$3\r\nfoo\r\n", "", "", "", 0, 0},                      // another command
		{"*2\r\n$4\r\nGETX\r\n$3\r\nfoo\r\n", "", "", "", 0, 0},                     // a longer name
		{"*3\r\n$3\r\nGET\r\n$3\r\nfoo\r\n$1\r\nx\r\n", "", "", "", 0, 0},           // wrong arity: the full parser's error
		{"GET foo\r\n", "", "", "", 0, 0},                                           // inline form
		{"*2\r\n$3\r\nGET\r\n$" + strings.Repeat("9", 12) + "\r\n", "", "", "", 0, 0},
	} {
		var f frame
		ok := scanFrame([]byte(tc.in), &f)
		cmd := ""
		if ok {
			cmd = f.cmd.name
		}
		if cmd != tc.cmd || (ok && (string(f.key) != tc.key || string(f.val) != tc.val || len(f.raw) != tc.size || len(f.keys) != tc.keys)) {
			t.Errorf("scanFrame(%q) = %v %q %q %q %d %d keys; want %q %q %q %d %d", tc.in, ok, cmd, f.key, f.val, len(f.raw), len(f.keys), tc.cmd, tc.key, tc.val, tc.size, tc.keys)
		}
	}
}

// FuzzScanFrames: whatever bytes the loop reads, the frames it takes are exactly the commands
// the full parser reads from the same bytes, and it never panics.
func FuzzScanFrames(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", mgetFrame(3, 4) + mgetFrame(2, 3),
		mgetFrame(64, 65), mgetFrame(2, 9), "*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$-1\r\n", "*2\r\n$3\r\nGET\r\n$99999999999\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var frames [maxLoopPipeline]frame
		n, _ := scanFrames(data, &frames)
		r := resp.NewReader(bufio.NewReader(bytes.NewReader(data)), resp.Limits{MaxArgs: 1024, MaxBulkBytes: 1 << 20, MaxCommandBytes: 1 << 22, MaxDiscardBytes: 1 << 22, MaxInline: 1 << 16})
		off := 0
		for i := range frames[:n] {
			fr := &frames[i]
			if !bytes.Equal(fr.raw, data[off:off+len(fr.raw)]) {
				t.Fatalf("frame %d is not the data at %d", i, off)
			}
			off += len(fr.raw)
			args, err := r.ReadCommand()
			if err != nil {
				t.Fatalf("frame %d (%q) does not parse: %v", i, fr.raw, err)
			}
			want := [][]byte{[]byte(fr.cmd.name), fr.key}
			switch fr.cmd {
			case setCommand:
				want = append(want, fr.val)
			case mgetCommand:
				want = append([][]byte{[]byte("mget")}, fr.keys...)
			}
			args[0] = bytes.ToLower(args[0])
			if !slices.EqualFunc(args, want, bytes.Equal) {
				t.Fatalf("frame %d is %q, the parser read %q", i, want, args)
			}
		}
	})
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
		if q.tr.untracked != untracked {
			t.Errorf("CLIENT CACHING YES answered %q (%v): untracked = %v", reply, err, q.tr.untracked)
		}
	}
}

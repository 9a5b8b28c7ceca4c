package resp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func reader(s string, l Limits) *Reader {
	return NewReader(bufio.NewReaderSize(strings.NewReader(s), 4096), l)
}

func join(args [][]byte) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = string(a)
	}
	return strings.Join(parts, "|")
}

func TestReadCommands(t *testing.T) {
	in := "*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n" + // array
		"PING\r\n" + // inline
		"\r\n" + // empty inline: skipped
		"*0\r\n" + // empty array: skipped
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n" + // empty argument
		"set  a   b\n" // inline, LF only, repeated spaces
	r := reader(in, DefaultLimits)
	want := []string{"GET|foo", "PING", "SET|k|", "set|a|b"}
	for _, w := range want {
		args, err := r.ReadCommand()
		if err != nil {
			t.Fatalf("reading %q: %v", w, err)
		}
		if got := join(args); got != w {
			t.Errorf("got %q, want %q", got, w)
		}
	}
	if _, err := r.ReadCommand(); err != io.EOF {
		t.Errorf("at the end: %v, want EOF", err)
	}
}

func TestBinarySafeAndLarge(t *testing.T) {
	val := strings.Repeat("\r\n\x00x", 5000) // larger than the bufio buffer, full of CRLFs
	in := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + strconv.Itoa(len(val)) + "\r\n" + val + "\r\n"
	args, err := reader(in, DefaultLimits).ReadCommand()
	if err != nil {
		t.Fatal(err)
	}
	if string(args[2]) != val || string(args[0]) != "SET" {
		t.Error("value corrupted")
	}
}

// TestLongRunsOfEmptyArrays: 16 MB of "*0" (a command with nothing to run) once overflowed
// the stack through recursion and killed the agent.
func TestLongRunsOfEmptyArrays(t *testing.T) {
	flood := strings.Repeat("*0\r\n", 4<<20) + strings.Repeat("*-1\r\n", 1<<20) + "*1\r\n$4\r\nPING\r\n"
	args, err := reader(flood, DefaultLimits).ReadCommand()
	if err != nil || join(args) != "PING" {
		t.Fatalf("after the flood: %q, %v", join(args), err)
	}
}

// TestArgumentsOverTheLimitAreDroppedWhole: the command is refused with the arguments kept,
// and the next command reads cleanly (the connection stays in step).
func TestArgumentsOverTheLimitAreDroppedWhole(t *testing.T) {
	l := Limits{MaxArgs: 8, MaxBulkBytes: 16, MaxCommandBytes: 40 + 4*argOverhead, MaxDiscardBytes: 1 << 20, MaxInline: 64}
	big := strings.Repeat("\r\nx", 1000) // larger than the bufio buffer, full of CRLFs
	in := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000\r\n" + big + "\r\n" +
		"*4\r\n$4\r\nMSET\r\n$16\r\naaaaaaaaaaaaaaaa\r\n$16\r\nbbbbbbbbbbbbbbbb\r\n$16\r\ncccccccccccccccc\r\n" +
		"*1\r\n$4\r\nPING\r\n"
	r := reader(in, l)
	args, err := r.ReadCommand()
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Arg != 2 || tl.Size != 3000 || tl.Limit != 16 || tl.Total {
		t.Fatalf("oversized argument: %v %+v", err, tl)
	}
	if join(args) != "SET|k|" {
		t.Errorf("kept arguments %q", join(args))
	}
	_, err = r.ReadCommand()
	if !errors.As(err, &tl) || !tl.Total || tl.Arg != 3 || tl.Limit != 40+4*argOverhead {
		t.Fatalf("command over the total: %v %+v", err, tl)
	}
	if args, err := r.ReadCommand(); err != nil || join(args) != "PING" {
		t.Fatalf("next command: %q, %v", join(args), err)
	}
	// Past the hard cap the argument is not read at all: the connection must close.
	_, err = reader("*2\r\n$3\r\nSET\r\n$2000000\r\n", l).ReadCommand()
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		t.Errorf("argument over the hard cap: %v, want a protocol error", err)
	}
	// A dropped argument must still end in CRLF.
	_, err = reader("*2\r\n$3\r\nSET\r\n$20\r\n"+strings.Repeat("y", 22), l).ReadCommand()
	if !errors.As(err, &pe) {
		t.Errorf("dropped argument without CRLF: %v, want a protocol error", err)
	}
}

// TestNegativeMultibulkIsIgnoredAsValkeyIgnoresIt: Valkey 8 runs nothing for "*-10" and goes on
// (its suite's "Negative multibulk length"); the agent closed the connection with a protocol
// error.
func TestNegativeMultibulkIsIgnoredAsValkeyIgnoresIt(t *testing.T) {
	args, err := reader("*-10\r\n*1\r\n$4\r\nPING\r\n", Limits{MaxArgs: 4, MaxBulkBytes: 16, MaxCommandBytes: 64, MaxDiscardBytes: 16, MaxInline: 32}).ReadCommand()
	if err != nil || len(args) != 1 || string(args[0]) != "PING" {
		t.Errorf("got %q, %v; want PING after the ignored frame", args, err)
	}
}

func TestBadFrames(t *testing.T) {
	small := Limits{MaxArgs: 4, MaxBulkBytes: 16, MaxCommandBytes: 64, MaxDiscardBytes: 16, MaxInline: 32}
	tests := map[string]string{
		"bulk over the limit": "*2\r\n$3\r\nGET\r\n$17\r\n",
		"too many arguments":  "*5\r\n",
		"negative bulk":       "*1\r\n$-5\r\n",
		"missing dollar":      "*1\r\n:3\r\n",
		"bad length":          "*x\r\n",
		"unterminated bulk":   "*1\r\n$3\r\nGETXX",
		"inline too long":     strings.Repeat("a", 100) + "\r\n",
		"unbalanced quotes":   "SET \"a b c\r\n",
		"huge length":         "*99999999999999\r\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := reader(in, small).ReadCommand()
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Errorf("got %v, want a protocol error", err)
			}
		})
	}
	if _, err := reader("*2\r\n$3\r\nGET\r\n", small).ReadCommand(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v, want unexpected EOF", err)
	}
}

func TestWriterRESP2AndRESP3(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(bufio.NewWriter(&buf))
	write := func() {
		w.OK()
		w.Int(-7)
		w.Bulk([]byte("v"))
		w.Null()
		w.Map(1)
		w.BulkString("k")
		w.Error("ERR x")
	}
	write()
	w.Proto = 3
	write()
	w.Flush()
	want := "+OK\r\n:-7\r\n$1\r\nv\r\n$-1\r\n*2\r\n$1\r\nk\r\n-ERR x\r\n" +
		"+OK\r\n:-7\r\n$1\r\nv\r\n_\r\n%1\r\n$1\r\nk\r\n-ERR x\r\n"
	if buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
}

func BenchmarkReadPipelinedGET(b *testing.B) {
	cmd := "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n"
	data := []byte(strings.Repeat(cmd, 1024))
	src := bytes.NewReader(data)
	br := bufio.NewReaderSize(src, 64<<10)
	r := NewReader(br, DefaultLimits)
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%1024 == 0 {
			src.Reset(data)
			br.Reset(src)
		}
		if _, err := r.ReadCommand(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUnauthenticatedBounds: before AUTH, Valkey's bounds (10 arguments, 16 KiB each) are
// protocol errors with its words; 30 such clients once made the agent hold 2.5 GB.
func TestUnauthenticatedBounds(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"*11\r\n", "Protocol error: unauthenticated multibulk length"},
		{"*2\r\n$3\r\nSET\r\n$16385\r\n", "Protocol error: unauthenticated bulk length"},
		{"*2\r\n$3\r\nSET\r\n$65000000\r\n", "Protocol error: unauthenticated bulk length"},
	} {
		r := reader(tt.in, DefaultLimits)
		r.SetAuthenticated(false)
		_, err := r.ReadCommand()
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Error() != tt.want {
			t.Errorf("%q before AUTH: %v, want %q", tt.in, err, tt.want)
		}
	}
	ok := "*10\r\n" + strings.Repeat("$16384\r\n"+strings.Repeat("x", 16384)+"\r\n", 10)
	r := reader(ok, DefaultLimits)
	r.SetAuthenticated(false)
	if args, err := r.ReadCommand(); err != nil || len(args) != 10 {
		t.Errorf("10 arguments of 16 KiB before AUTH: %d, %v", len(args), err)
	}
}

// TestManyArgumentsAreBoundedByTheCommandLimit: 100,000 keys are read (Valkey takes MGETs that
// long), and a flood of empty arguments is bounded by MaxCommandBytes, not by memory.
func TestManyArgumentsAreBoundedByTheCommandLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("*100001\r\n$4\r\nMGET\r\n")
	for i := range 100000 {
		k := fmt.Sprintf("key:%d", i)
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(k), k)
	}
	l := Limits{MaxArgs: 1<<31 - 1, MaxBulkBytes: 1 << 20, MaxCommandBytes: 64 << 20, MaxDiscardBytes: 1 << 30, MaxInline: 1 << 16}
	if args, err := reader(b.String(), l).ReadCommand(); err != nil || len(args) != 100001 || string(args[100000]) != "key:99999" {
		t.Fatalf("MGET of 100,000 keys: %d args, %v", len(args), err)
	}
	small := Limits{MaxArgs: 1<<31 - 1, MaxBulkBytes: 1 << 20, MaxCommandBytes: 1 << 16, MaxDiscardBytes: 1 << 30, MaxInline: 1 << 16}
	flood := "*1000000\r\n" + strings.Repeat("$0\r\n\r\n", 1000000)
	r := reader(flood, small)
	args, err := r.ReadCommand()
	var tl *TooLargeError
	if !errors.As(err, &tl) || !tl.Total {
		t.Fatalf("a million empty arguments over a 64 KiB limit: %v", err)
	}
	if len(args)*argOverhead > small.MaxCommandBytes {
		t.Errorf("%d argument views kept past the limit", len(args))
	}
}

// TestLengthErrorsAreWordedAsValkeyWordsThem: Valkey's suite matches "*invalid bulk length*" for
// a bulk length that is not a number; the reader said "invalid length" for both kinds.
func TestLengthErrorsAreWordedAsValkeyWordsThem(t *testing.T) {
	limits := Limits{MaxArgs: 4, MaxBulkBytes: 16, MaxCommandBytes: 64, MaxDiscardBytes: 16, MaxInline: 32}
	for in, want := range map[string]string{
		"*1\r\n$blabla\r\n": "Protocol error: invalid bulk length",
		"*1\r\n$\r\n":       "Protocol error: invalid bulk length",
		"*x\r\n":            "Protocol error: invalid multibulk length",
		"*\r\n":             "Protocol error: invalid multibulk length",
	} {
		if _, err := reader(in, limits).ReadCommand(); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// Inline commands split as Valkey's sdssplitargs splits them (its cases, and the quote errors).
func TestInlineArgumentsSplitAsValkey(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string // nil: unbalanced quotes
	}{
		{`SET "a b" c`, []string{"SET", "a b", "c"}},
		{`SET 'a b' "c\nd\x41\"e"`, []string{"SET", "a b", "c\ndA\"e"}},
		{`SET 'it\'s' x`, []string{"SET", "it's", "x"}},
		{`SET a"b c" d`, []string{"SET", "ab c", "d"}},
		{"  PING  \t ", []string{"PING"}},
		{`SET "\xZZ" x`, []string{"SET", "xZZ", "x"}},
		{`SET "a`, nil},
		{`SET 'a`, nil},
		{`SET "a"b`, nil}, // a closing quote must end the argument
		{`SET 'a'b`, nil},
	} {
		args, _, ok := splitArgs([]byte(tc.line), nil, nil)
		var got []string
		for _, a := range args {
			got = append(got, string(a))
		}
		if ok != (tc.want != nil) || (ok && !slices.Equal(got, tc.want)) {
			t.Errorf("%q: %q %v, want %q", tc.line, got, ok, tc.want)
		}
	}
	rd := NewReader(bufio.NewReader(strings.NewReader("SET \"a b\r\n")), DefaultLimits)
	if _, err := rd.ReadCommand(); err == nil || !strings.Contains(err.Error(), "unbalanced quotes in request") {
		t.Errorf("unbalanced quotes: %v", err)
	}
}

package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzReadCommand feeds arbitrary bytes to the reader: it must never panic, never return
// arguments larger than the limits, and fail only with protocol, EOF or unexpected-EOF errors.
func FuzzReadCommand(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", "PING\r\n", "*1\r\n$-1\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n",
		"*-1\r\n", "$5\r\nhello\r\n", "*1\r\n$99999999999\r\n", "\r\n\r\n", "*2\r\n$3\r\nGET\r\n",
		strings.Repeat("*0\r\n", 10000), strings.Repeat("*1\r\n*1\r\n", 1000), "*1\r\n$2000\r\n" + strings.Repeat("x", 2000) + "\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1500\r\n", strings.Repeat("*-1\r\n*0\r\n\r\n", 3000) + "PING\r\n",
	} {
		f.Add([]byte(seed))
	}
	limits := Limits{MaxArgs: 64, MaxBulkBytes: 1024, MaxCommandBytes: 4096, MaxDiscardBytes: 1 << 20, MaxInline: 256}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(data), 64), limits)
		for i := 0; i < 100; i++ {
			args, err := r.ReadCommand()
			var tl *TooLargeError
			if errors.As(err, &tl) {
				if tl.Size <= int64(limits.MaxBulkBytes) && !tl.Total {
					t.Fatalf("argument of %d bytes dropped under the limit", tl.Size)
				}
				args, err = tl.Args, nil
			}
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			if len(args) > limits.MaxArgs || len(args) == 0 {
				t.Fatalf("%d arguments", len(args))
			}
			total := 0
			for _, a := range args {
				if len(a) > limits.MaxBulkBytes {
					t.Fatalf("argument of %d bytes", len(a))
				}
				total += len(a)
			}
			if total > limits.MaxCommandBytes {
				t.Fatalf("command of %d bytes buffered", total)
			}
		}
	})
}

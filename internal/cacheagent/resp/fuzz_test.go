package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadCommand feeds arbitrary bytes to the reader: it must never panic, never return
// arguments larger than the limits, and fail only with protocol, EOF or unexpected-EOF errors.
func FuzzReadCommand(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", "PING\r\n", "*1\r\n$-1\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n",
		"*-1\r\n", "$5\r\nhello\r\n", "*1\r\n$99999999999\r\n", "\r\n\r\n", "*2\r\n$3\r\nGET\r\n",
	} {
		f.Add([]byte(seed))
	}
	limits := Limits{MaxArgs: 64, MaxBulkBytes: 1024, MaxInline: 256}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(data), 64), limits)
		for i := 0; i < 100; i++ {
			args, err := r.ReadCommand()
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
			for _, a := range args {
				if len(a) > limits.MaxBulkBytes {
					t.Fatalf("argument of %d bytes", len(a))
				}
			}
		}
	})
}

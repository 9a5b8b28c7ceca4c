package resp

import "strconv"

// Commands to a server are arrays of bulk strings. These append one to a buffer, for the
// connections that batch their writes (the event loop's, the operator's).

// AppendArray appends an array header of n elements.
func AppendArray(out []byte, n int) []byte {
	out = append(out, '*')
	out = strconv.AppendInt(out, int64(n), 10)
	return append(out, '\r', '\n')
}

// AppendBulk appends p as a bulk string.
func AppendBulk(out, p []byte) []byte {
	out = append(out, '$')
	out = strconv.AppendInt(out, int64(len(p)), 10)
	out = append(out, '\r', '\n')
	out = append(out, p...)
	return append(out, '\r', '\n')
}

// AppendBulkString appends s as a bulk string.
func AppendBulkString(out []byte, s string) []byte {
	out = append(out, '$')
	out = strconv.AppendInt(out, int64(len(s)), 10)
	out = append(out, '\r', '\n')
	out = append(out, s...)
	return append(out, '\r', '\n')
}

// AppendCommand appends the command args.
func AppendCommand(out []byte, args ...string) []byte {
	out = AppendArray(out, len(args))
	for _, a := range args {
		out = AppendBulkString(out, a)
	}
	return out
}

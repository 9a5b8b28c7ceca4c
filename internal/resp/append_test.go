package resp

import "testing"

func TestAppendCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "*1\r\n$4\r\nPING\r\n"},
		{[]string{"AUTH", "p\r\nw"}, "*2\r\n$4\r\nAUTH\r\n$4\r\np\r\nw\r\n"},
		{[]string{"SET", "k", ""}, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"},
		{nil, "*0\r\n"},
	} {
		if got := string(AppendCommand([]byte("x"), tc.args...)); got != "x"+tc.want {
			t.Errorf("AppendCommand(%q) = %q, want %q", tc.args, got, "x"+tc.want)
		}
	}
	if got := string(AppendBulk(AppendArray(nil, 2), []byte("GET"))); got != "*2\r\n$3\r\nGET\r\n" {
		t.Errorf("AppendArray + AppendBulk = %q", got)
	}
}

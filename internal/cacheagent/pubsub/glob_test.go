package pubsub

import "testing"

// Cases from Valkey's own stringmatch tests and its pub/sub unit, plus the edges of classes.
func TestMatchIsValkeysGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", false}, // as Valkey: * needs a character to start on
		{"*", "anything", true}, {"", "", true}, {"", "a", false},
		{"foo.*", "foo.1", true}, {"foo.*", "foo", false}, {"foo.*", "bar.1", false},
		{"h?llo", "hello", true}, {"h?llo", "hllo", false},
		{"h*llo", "heeeello", true}, {"h[ae]llo", "hallo", true}, {"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true}, {"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true}, {"h[b-a]llo", "hallo", true}, {"h[a-b]llo", "hcllo", false},
		{`h\*llo`, "h*llo", true}, {`h\*llo`, "hello", false},
		{`[\]]`, "]", true}, {`[\]]`, "a", false},
		{"a[", "a[", false}, {"a[b", "ab", true}, {"[abc", "a", true},
		{"*a*b*c*", "xaybzc", true}, {"*a*b*c*", "xaybz", false},
		{"__key*__:*", "__keyspace@0__:foo", true},
		{"a*", "a", true}, {"a**", "a", true}, {"a?", "a", false},
	} {
		if got := Match(tc.pattern, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func FuzzMatchNeverPanics(f *testing.F) {
	f.Add("h[a-", "hb")
	f.Add(`\`, `\`)
	f.Fuzz(func(_ *testing.T, p, s string) { Match(p, s) })
}

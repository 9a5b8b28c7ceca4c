package purge

import "testing"

func TestGlobEscapeMatchesThePrefixLiterally(t *testing.T) {
	for in, want := range map[string]string{
		"user:":        "user:",
		"a*b?c":        `a\*b\?c`,
		"[x]":          `\[x\]`,
		`back\slash`:   `back\\slash`,
		"emoji:\u263a": "emoji:\u263a",
	} {
		if got := GlobEscape(in); got != want {
			t.Errorf("GlobEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

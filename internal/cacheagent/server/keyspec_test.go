package server

import (
	"fmt"
	"testing"
)

func TestKeySpecs(t *testing.T) {
	args := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, a := range s {
			out[i] = []byte(a)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		spec keySpec
		args [][]byte
		want string
	}{
		{"one key", oneKey, args("GET", "k"), "[k]"},
		{"two keys", twoKeys, args("LMOVE", "a", "b", "LEFT", "RIGHT"), "[a b]"},
		{"all keys", allKeys, args("DEL", "a", "b", "c"), "[a b c]"},
		{"pairs", keyValuePairs, args("MSET", "a", "1", "b", "2"), "[a b]"},
		{"after the operation", keysAfterOne, args("BITOP", "AND", "d", "s1", "s2"), "[d s1 s2]"},
		{"a subcommand's key", subcommandKey, args("OBJECT", "ENCODING", "k"), "[k]"},
		{"a subcommand without one", subcommandKey, args("OBJECT", "HELP"), "[]"},
		{"script keys", scriptKeys, args("EVAL", "s", "2", "a", "b", "arg"), "[a b]"},
		{"script without keys", scriptKeys, args("EVAL", "s", "0", "arg"), "[]"},
		{"numkeys over the arguments", scriptKeys, args("EVAL", "s", "3", "a"), "[]"},
		{"numkeys not a number", numkeysFirst, args("ZUNION", "x", "a"), "[]"},
		{"numkeys first", numkeysFirst, args("ZUNION", "2", "a", "b", "WEIGHTS", "1", "2"), "[a b]"},
		{"destination and numkeys", destAndNumkeys, args("ZUNIONSTORE", "d", "2", "a", "b"), "[d a b]"},
		{"sort stores", sortKeys, args("SORT", "l", "BY", "w_*", "STORE", "dst"), "[l dst]"},
		{"sort reads", sortKeys, args("SORT", "l", "ALPHA"), "[l]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(tc.spec.of(tc.args)); got != tc.want {
				t.Errorf("keys %s, want %s", got, tc.want)
			}
		})
	}
}

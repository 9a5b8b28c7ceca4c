package server

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestGroupByShard(t *testing.T) {
	for _, tc := range []struct {
		name       string
		owners     []int // by item; -1: left out
		wantShards []int
		wantPos    [][]int
	}{
		{"none", nil, nil, nil},
		{"one shard", []int{2, 2, 2}, []int{2}, [][]int{{0, 1, 2}}},
		{"order of first appearance", []int{1, 0, 1, 3, 0}, []int{1, 0, 3}, [][]int{{0, 2}, {1, 4}, {3}}},
		{"items left out", []int{-1, 0, -1, 0}, []int{0}, [][]int{{1, 3}}},
		{"all left out", []int{-1, -1}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shards, pos := groupByShard(len(tc.owners), nil, func(k int) (int, bool) { return tc.owners[k], tc.owners[k] >= 0 })
			if !slices.Equal(shards, tc.wantShards) || fmt.Sprint(pos) != fmt.Sprint(tc.wantPos) {
				t.Errorf("shards %v positions %v, want %v %v", shards, pos, tc.wantShards, tc.wantPos)
			}
		})
	}
}

func TestRunPerShardRunsEachGroupOnce(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	items := []string{"a1", "b1", "", "a2", "c1", "b2"}
	runPerShard(items, func(it string) (byte, bool) {
		if it == "" {
			return 0, false
		}
		return it[0], true
	}, func(sh byte, group []string) {
		mu.Lock()
		defer mu.Unlock()
		if _, twice := got[string(sh)]; twice {
			t.Errorf("shard %c run twice", sh)
		}
		got[string(sh)] = group
	})
	if want := "map[a:[a1 a2] b:[b1 b2] c:[c1]]"; fmt.Sprint(got) != want {
		t.Errorf("groups %v, want %s", got, want)
	}
}

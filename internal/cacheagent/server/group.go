package server

import "sync"

// groupByShard groups n items by the shard shardOf names (false: the item is left out): the
// shards in order of first appearance, appended to shards, and for each the indexes of its
// items in order. Every multi-key command splits its keys with it. Requests touch a few
// shards: a scan beats a map.
func groupByShard[S comparable](n int, shards []S, shardOf func(k int) (S, bool)) ([]S, [][]int) {
	var positions [][]int
	for k := range n {
		sh, ok := shardOf(k)
		if !ok {
			continue
		}
		j := 0
		for j < len(shards) && shards[j] != sh {
			j++
		}
		if j == len(shards) {
			shards = append(shards, sh)
			positions = append(positions, nil)
		}
		positions[j] = append(positions[j], k)
	}
	return shards, positions
}

// runPerShard groups items by shard (groupByShard) and runs each group, the groups in parallel.
func runPerShard[S comparable, T any](items []T, shardOf func(T) (S, bool), run func(S, []T)) {
	shards, positions := groupByShard(len(items), nil, func(k int) (S, bool) { return shardOf(items[k]) })
	var wg sync.WaitGroup
	for j, sh := range shards {
		group := make([]T, len(positions[j]))
		for k, at := range positions[j] {
			group[k] = items[at]
		}
		wg.Go(func() { run(sh, group) })
	}
	wg.Wait()
}

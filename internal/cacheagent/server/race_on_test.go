//go:build race

package server_test

// raceSlowdown: the race detector makes the agent several times slower.
const raceSlowdown = 8

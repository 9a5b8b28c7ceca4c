// Command agent is the per-node cache agent. Its data path is being built (see issue 4); until
// then it refuses to start rather than pretend to serve.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "cachefleet agent: the data path is not implemented yet")
	os.Exit(1)
}

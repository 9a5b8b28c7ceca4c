// Command pause is the sandbox ("pause") container of the local real-node cluster: it holds a
// pod's namespaces open and exits on SIGINT or SIGTERM. A static Go binary, so the image is
// built here without a registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}

// Command etcd is the upstream etcd server, built from its Go module so the
// local environment does not depend on a distribution package that is too old
// for current kube-apiservers.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

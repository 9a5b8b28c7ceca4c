package source

import (
	"strings"
	"testing"
)

func TestStaticDocument(t *testing.T) {
	doc, err := StaticDocument("shard-0=127.0.0.1:7001, shard-1=127.0.0.1:7002", Defaults{L1: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Shards) != 2 || doc.Shards[1].Primary != "127.0.0.1:7002" || doc.Epoch != 1 || doc.Checksum == "" {
		t.Errorf("document %+v", doc)
	}
	for in, want := range map[string]string{
		"":                        "no shards",
		"127.0.0.1:7001":          "not name=host:port",
		"a=1.2.3.4:1,a=1.2.3.4:2": "appears twice",
		"a=nohostport":            "not name=host:port",
	} {
		if _, err := StaticDocument(in, Defaults{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("StaticDocument(%q) error %v, want %q", in, err, want)
		}
	}
}

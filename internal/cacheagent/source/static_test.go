package source

import (
	"strings"
	"testing"
)

func TestStaticDocument(t *testing.T) {
	doc, err := StaticDocument("shard-0=127.0.0.1:7001, shard-1=127.0.0.1:7002+127.0.0.1:7012", Defaults{L1: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Shards) != 2 || doc.Shards[1].Primary != "127.0.0.1:7002" || doc.Epoch != 1 || doc.Checksum == "" {
		t.Errorf("document %+v", doc)
	}
	if r0, r1 := doc.Shards[0].Replicas, doc.Shards[1].Replicas; r0 != nil || len(r1) != 1 || r1[0] != "127.0.0.1:7012" {
		t.Errorf("replicas %q and %q, want none and 127.0.0.1:7012", r0, r1)
	}
	for in, want := range map[string]string{
		"":                        "no shards",
		"127.0.0.1:7001":          "not name=host:port",
		"a=1.2.3.4:1,a=1.2.3.4:2": "appears twice",
		"a=nohostport":            "not name=host:port",
		"a=1.2.3.4:1+norep":       "not name=host:port",
	} {
		if _, err := StaticDocument(in, Defaults{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("StaticDocument(%q) error %v, want %q", in, err, want)
		}
	}
}

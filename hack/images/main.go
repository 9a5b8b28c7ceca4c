// Command images writes a container image as a docker-archive tarball without a container engine,
// for clusters whose nodes import images with `ctr images import` (no registry is reachable).
//
//	go run ./hack/images -tag ghcr.io/cachefleet/agent:dev -out agent.tar -entrypoint /agent -user 65532 bin/agent=/agent
//	go run ./hack/images -tag valkey/valkey:8.0.1 -out valkey.tar -busybox /usr/bin/busybox -user 999 \
//	    -cmd valkey-server $VALKEY/valkey-server=/usr/local/bin/valkey-server
//
// Each argument is src=dst. A dynamically linked ELF file brings the shared libraries `ldd` names,
// at their own paths, so a binary built on this machine runs in the image as it does here.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type entry struct {
	src, dst, link string // a file (src -> dst) or a symlink (dst -> link)
	mode           int64
}

func main() {
	tag := flag.String("tag", "", "image reference, e.g. ghcr.io/cachefleet/agent:dev")
	out := flag.String("out", "", "docker-archive tarball to write")
	entrypoint := flag.String("entrypoint", "", "entrypoint, space separated")
	cmd := flag.String("cmd", "", "default command, space separated")
	user := flag.String("user", "", "numeric user the image runs as")
	busybox := flag.String("busybox", "", "a static busybox: installed as /bin/busybox with every applet linked in /bin")
	flag.Parse()
	if *tag == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*tag, *out, *entrypoint, *cmd, *user, *busybox, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(tag, out, entrypoint, cmd, user, busybox string, files []string) error {
	var entries []entry
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || !path.IsAbs(dst) {
			return fmt.Errorf("%q: want src=/absolute/dst", f)
		}
		entries = append(entries, entry{src: src, dst: dst, mode: 0o755})
		libs, err := sharedLibraries(src)
		if err != nil {
			return err
		}
		for _, l := range libs {
			entries = append(entries, entry{src: l, dst: l, mode: 0o755})
		}
	}
	if busybox != "" {
		applets, err := exec.Command(busybox, "--list").Output()
		if err != nil {
			return fmt.Errorf("busybox --list: %w", err)
		}
		entries = append(entries, entry{src: busybox, dst: "/bin/busybox", mode: 0o755})
		for _, a := range strings.Fields(string(applets)) {
			if a != "busybox" {
				entries = append(entries, entry{dst: "/bin/" + a, link: "busybox"})
			}
		}
	}
	layerTar, err := layer(entries)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint: strings.Fields(entrypoint),
		Cmd:        strings.Fields(cmd),
		User:       user,
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		WorkingDir: "/",
	})
	if err != nil {
		return err
	}
	img, err = mutate.ConfigFile(img, withPlatform(img))
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

func withPlatform(img v1.Image) *v1.ConfigFile {
	cf, err := img.ConfigFile()
	if err != nil {
		cf = &v1.ConfigFile{}
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	return cf
}

// layer is one tar holding every entry, with the parent directories each needs, and /tmp.
func layer(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{"/": true}
	addDir := func(d string) error {
		var chain []string
		for ; !dirs[d]; d = path.Dir(d) {
			chain = append(chain, d)
			dirs[d] = true
		}
		slices.Reverse(chain)
		for _, c := range chain {
			mode := int64(0o755)
			if c == "/tmp" {
				mode = 0o1777 // world-writable with the sticky bit, as programs expect
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(c, "/") + "/", Mode: mode}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := addDir("/tmp"); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.dst] {
			continue
		}
		seen[e.dst] = true
		if err := addDir(path.Dir(e.dst)); err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(e.dst, "/")
		if e.link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: e.link, Mode: 0o777}); err != nil {
				return nil, err
			}
			continue
		}
		data, err := os.ReadFile(e.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: e.mode, Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var lddPath = regexp.MustCompile(`(/\S+) \(0x`)

// sharedLibraries lists what a dynamic ELF binary loads (the interpreter included); nothing for
// static binaries and non-ELF files.
func sharedLibraries(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, nil //nolint:nilerr // not an ELF file: a script or data, no libraries
	}
	defer f.Close()
	if f.Section(".interp") == nil {
		return nil, nil
	}
	out, err := exec.Command("ldd", file).Output() //nolint:gosec // file is a path this build tool was given
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", file, err)
	}
	var libs []string
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		// The library keeps the name the loader looks for; os.ReadFile follows the symlink.
		libs = append(libs, m[1])
	}
	return libs, nil
}

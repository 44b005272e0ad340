package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStorageLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "nested")
	a, err := openStorage(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openStorage(path); err == nil || !strings.Contains(err.Error(), "in use by another anomalyd") {
		t.Fatalf("second open of a locked storage path: got %v, want an in-use error", err)
	}
	d, err := a.dir("checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
		t.Fatalf("dir(checkpoints): %v", err)
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	b, err := openStorage(path)
	if err != nil {
		t.Fatalf("open after the first one closed: %v", err)
	}
	b.close()
}

func TestStorageNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openStorage(file); err == nil || !strings.Contains(err.Error(), "--storage.path") {
		t.Fatalf("storage path that is a file: got %v, want an error naming --storage.path", err)
	}
}

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// storage is the directory under --storage.path, locked for this process:
// two anomalyd sharing one directory would overwrite each other's
// checkpoints and send each other's queued scores, so the second one
// refuses to start, as Prometheus does with its data directory.
type storage struct {
	path string
	lock *os.File
}

// openStorage creates path if needed and takes its lock file. The lock is
// an flock, which the kernel drops with the process, so a kill -9 leaves
// nothing to clean up.
func openStorage(path string) (*storage, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create --storage.path: %w", err)
	}
	name := filepath.Join(path, "lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("cannot open the lock file of --storage.path: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--storage.path %s is in use by another anomalyd (lock file %s); give each instance its own directory", path, name)
		}
		return nil, fmt.Errorf("cannot lock --storage.path (%s): %w", name, err)
	}
	return &storage{path: path, lock: f}, nil
}

// dir returns the subdirectory name of the storage path, created if needed.
func (st *storage) dir(name string) (string, error) {
	d := filepath.Join(st.path, name)
	if err := os.MkdirAll(d, 0o750); err != nil {
		return "", fmt.Errorf("cannot create %s under --storage.path: %w", name, err)
	}
	return d, nil
}

// close releases the lock; later calls do nothing.
func (st *storage) close() error {
	if st.lock == nil {
		return nil
	}
	err := st.lock.Close()
	st.lock = nil
	return err
}

//go:build linux

package store

import (
	"errors"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestCheckCatches writes, behind the API's back, what the API refuses,
// and expects Check to name it. Each case undoes its damage so the
// cleanup Check passes.
func TestCheckCatches(t *testing.T) {
	s := newTest(t)
	if err := s.AddPersistent(tcp(5000, 20, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("Check on a sound store: %v", err)
	}
	put := func(bucket, k, v []byte) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, v) }); err != nil {
			t.Fatal(err)
		}
	}
	del := func(bucket, k []byte) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(k) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name   string
		bucket []byte
		k, v   []byte
		want   string
	}{
		{"overlap", bucketPersistent, persistentKey(6, 5010, 20), persistentValue(tcp(5010, 20, 2)), "overlaps"},
		{"same start", bucketPersistent, persistentKey(6, 5000, 1), persistentValue(tcp(5000, 1, 2)), "overlaps"},
		{"duplicate token", bucketPersistent, persistentKey(6, 6000, 1), persistentValue(tcp(6000, 1, 1)), "token"},
		{"zero token", bucketPersistent, persistentKey(6, 6000, 1), persistentValue(tcp(6000, 1, 0)), "token 0"},
		{"past 65535", bucketPersistent, persistentKey(6, 65535, 2), persistentValue(tcp(65535, 2, 2)), "past port 65535"},
		{"short value", bucketPersistent, persistentKey(6, 6000, 1), []byte{1, 2, 3}, "want 5 and 20"},
		{"bad proto", bucketPersistent, persistentKey(1, 6000, 1), persistentValue(tcp(6000, 1, 2)), "protocol 1"},
		{"reversed dynamic", bucketDynamic, []byte{6}, []byte{0, 10, 0, 5}, "10 > 5"},
		{"unmerged sysctl", bucketSysctl, keyAdded, encodeRanges([]Range{{Lo: 1, Hi: 2}, {Lo: 3, Hi: 4}}), "not merged"},
		{"bad magic", bucketMeta, keyMagic, []byte("nope"), "magic"},
	} {
		var prev []byte
		s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(tt.bucket).Get(tt.k); v != nil {
				prev = append([]byte(nil), v...)
			}
			return nil
		})
		put(tt.bucket, tt.k, tt.v)
		err := s.Check()
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Check = %v, want ErrCorrupt mentioning %q", tt.name, err, tt.want)
		}
		if prev != nil {
			put(tt.bucket, tt.k, prev)
		} else {
			del(tt.bucket, tt.k)
		}
	}
}

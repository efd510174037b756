//go:build linux

package etcdfleet

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Publish writes the host's reservations to show/NAME (under the member
// lease) if they changed since the last write. The broker calls it once
// a second (publishFleet); the list is rebuilt each time, written only
// when it differs.
func (m *Member) Publish() {
	if m.check() != nil {
		return
	}
	es := m.local.Entries()
	for i := range es {
		es[i].Member, es[i].Host = m.cfg.Name, m.host
	}
	v, _ := json.Marshal(es)
	m.mu.Lock()
	if string(v) == m.published {
		m.mu.Unlock()
		return
	}
	lease := m.lease
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, 3*time.Second)
	defer cancel()
	if _, err := m.cli.Put(ctx, m.key("show", m.cfg.Name), string(v), clientv3.WithLease(lease)); err == nil {
		m.mu.Lock()
		m.published = string(v)
		m.mu.Unlock()
	}
}

// Show gathers every member's published reservations, this member's
// read fresh from its host.
func (m *Member) Show(ctx context.Context) ([]Entry, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	m.Publish()
	ctx, cancel := opCtx(ctx)
	defer cancel()
	var resp *clientv3.GetResponse
	err := retry(ctx, func(bool) (err error) {
		resp, err = m.cli.Get(ctx, m.key("show")+"/", clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return nil, m.etcdErr("show", err)
	}
	var out []Entry
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), m.key("show")+"/")
		var es []Entry
		if json.Unmarshal(kv.Value, &es) != nil {
			continue
		}
		for _, e := range es {
			e.Member = name
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Member != out[j].Member {
			return out[i].Member < out[j].Member
		}
		if out[i].Proto != out[j].Proto {
			return out[i].Proto < out[j].Proto
		}
		return out[i].Start < out[j].Start
	})
	return out, nil
}

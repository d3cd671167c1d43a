// The qcow2 metadata cache.  All callers hold the node's lock_, so the
// cache itself needs no locking: a get() that loads from disk suspends with
// the lock held and nobody else can touch the cache meanwhile.
#include <algorithm>
#include <cstring>

#include "qcow2.h"

namespace qemu::qcow2 {

Qcow2Cache::Ref::Ref(Ref&& o) noexcept : cache_(o.cache_), entry_(o.entry_)
{
    o.cache_ = nullptr;
    o.entry_ = nullptr;
}

Qcow2Cache::Ref& Qcow2Cache::Ref::operator=(Ref&& o) noexcept
{
    if (this != &o) {
        reset();
        cache_ = o.cache_;
        entry_ = o.entry_;
        o.cache_ = nullptr;
        o.entry_ = nullptr;
    }
    return *this;
}

void Qcow2Cache::Ref::reset()
{
    if (entry_) {
        entry_->pins--;
        entry_ = nullptr;
        cache_ = nullptr;
    }
}

Qcow2Cache::Qcow2Cache(BdrvChild* file, size_t table_size, size_t nb_entries, MetadataKind kind)
    : file_(file), table_size_(table_size), kind_(kind), entries_(std::max<size_t>(nb_entries, 4))
{
}

Qcow2Cache::Entry* Qcow2Cache::find_victim()
{
    Entry* victim = nullptr;
    for (Entry& e : entries_) {
        if (e.pins > 0) {
            continue;
        }
        if (e.offset == 0) {
            return &e;  // a free slot beats any eviction
        }
        if (!victim || e.lru < victim->lru) {
            victim = &e;
        }
    }
    return victim;
}

Task<int> Qcow2Cache::get(uint64_t offset, bool read, Ref& out)
{
    out.reset();
    for (;;) {
        auto it = index_.find(offset);
        if (it != index_.end()) {
            Entry* e = it->second;
            e->lru = ++lru_clock_;
            e->pins++;
            out = Ref(this, e);
            co_return 0;
        }
        Entry* victim = find_victim();
        if (!victim) {
            co_return -ENOSPC;  // every slot pinned: a caller bug
        }
        if (victim->dirty) {
            // Dirty tables may only reach the disk in the owner's order.
            int ret = before_write_back ? co_await before_write_back() : co_await write_entry(*victim);
            if (ret < 0) {
                co_return ret;
            }
            if (victim->dirty) {
                ret = co_await write_entry(*victim);
                if (ret < 0) {
                    co_return ret;
                }
            }
            continue;  // the world may have changed while we waited
        }
        if (victim->offset) {
            index_.erase(victim->offset);
        }
        if (!victim->data.data()) {
            victim->data = AlignedBuffer(table_size_, 4096);
        }
        victim->offset = offset;
        victim->lru = ++lru_clock_;
        victim->pins = 1;
        index_[offset] = victim;
        if (read) {
            IOVector qiov(victim->data.data(), table_size_);
            int ret = co_await bdrv_co_preadv(file_, offset, table_size_, qiov);
            if (ret < 0) {
                index_.erase(offset);
                victim->offset = 0;
                victim->pins = 0;
                co_return ret;
            }
        } else {
            memset(victim->data.data(), 0, table_size_);
        }
        out = Ref(this, victim);
        co_return 0;
    }
}

Task<int> Qcow2Cache::write_entry(Entry& e)
{
    if (overlap_check) {
        int ret = overlap_check(e.offset, table_size_);
        if (ret < 0) {
            co_return ret;
        }
    }
    IOVector qiov(e.data.data(), table_size_);
    int ret = co_await bdrv_co_pwritev(file_, e.offset, table_size_, qiov);
    if (ret < 0) {
        co_return ret;
    }
    e.dirty = false;
    co_return 0;
}

Task<int> Qcow2Cache::write_back()
{
    std::vector<Entry*> dirty;
    for (Entry& e : entries_) {
        if (e.dirty) {
            dirty.push_back(&e);
        }
    }
    std::sort(dirty.begin(), dirty.end(), [](Entry* a, Entry* b) { return a->offset < b->offset; });
    for (Entry* e : dirty) {
        int ret = co_await write_entry(*e);
        if (ret < 0) {
            co_return ret;
        }
    }
    co_return 0;
}

void Qcow2Cache::discard(uint64_t offset)
{
    auto it = index_.find(offset);
    if (it == index_.end()) {
        return;
    }
    Entry* e = it->second;
    index_.erase(it);
    e->dirty = false;
    e->offset = 0;
    e->lru = 0;
}

void Qcow2Cache::drop_idle()
{
    for (Entry& e : entries_) {
        if (e.offset && !e.dirty && e.pins == 0 && e.lru <= clean_mark_) {
            index_.erase(e.offset);
            e.offset = 0;
            e.data = AlignedBuffer();
        }
    }
    clean_mark_ = lru_clock_;
}

bool Qcow2Cache::has_dirty() const
{
    for (const Entry& e : entries_) {
        if (e.dirty) {
            return true;
        }
    }
    return false;
}

}  // namespace qemu::qcow2

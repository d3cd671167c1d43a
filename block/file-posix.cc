// The `file` and `host_device` protocol drivers: images in regular files and
// on host block (or character) devices, as QEMU's block/file-posix.c.
//
// I/O goes through the node's AioContext io_uring ring by default
// (aio=io_uring; aio=native, QEMU's Linux AIO, requires cache.direct=on as
// in QEMU and is served by io_uring too) or through a thread pool doing
// preadv/pwritev (aio=threads).  Operations without an io_uring opcode
// (ioctls, truncation with preallocation) always run on the thread pool.
// With io_uring, page-cache writes are copied in this thread when that is
// cheaper than io_uring's kernel worker (block/inline-write-policy.h).
//
// cache.direct=on opens with O_DIRECT; the driver then probes the request
// and memory alignment the kernel wants and publishes them in its limits, so
// the generic layer aligns requests.  Buffers that are still misaligned in
// memory are bounced here.
//
// Image locking follows QEMU's protocol exactly (OFD byte-range locks at
// bytes 100+bit for each permission held and 200+bit for each permission not
// shared), so our tools and QEMU's see each other's claims.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "block/block_int.h"
#include "block/file-posix-zoned.h"
#include "inline-write-policy.h"
#include "qemu/cutils.h"
#include "qemu/iov.h"
#include "qemu/thread-pool.h"
#include "qemu/units.h"

namespace qemu {

namespace {

template <typename Syscall>
int retry_eintr(Syscall&& syscall)
{
    int ret;
    do {
        ret = syscall();
    } while (ret == -1 && errno == EINTR);
    return ret == -1 ? -errno : ret;
}

// The errors with which the kernel says "this file (system) cannot do that";
// callers fall back on -ENOTSUP.
int translate_unsupported(int ret)
{
    if (ret == -ENODEV || ret == -ENOSYS || ret == -EOPNOTSUPP || ret == -ENOTTY) {
        return -ENOTSUP;
    }
    return ret;
}

// --- Image locking ------------------------------------------------------------

// Byte offsets of QEMU's lock bytes (libvirt owns byte 0).
constexpr int kLockPermBase = 100;
constexpr int kLockSharedBase = 200;
constexpr int kPermBits = 4;  // the bits of BLK_PERM_ALL

bool ofd_locks_supported()
{
    static const bool supported = [] {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return false;
        }
        struct flock fl = {};
        fl.l_whence = SEEK_SET;
        fl.l_type = F_WRLCK;
        bool ok = fcntl(fd, F_OFD_GETLK, &fl) == 0 || errno != EINVAL;
        close(fd);
        return ok;
    }();
    return supported;
}

// Takes (F_RDLCK) or drops (F_UNLCK) an OFD lock on one byte.
int lock_byte(int fd, int byte, short type)
{
    struct flock fl = {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = type;
    return fcntl(fd, F_OFD_SETLK, &fl) == -1 ? -errno : 0;
}

// 0 if no other open file description holds a lock on the byte, -EAGAIN if
// one does.  Our own locks never conflict with a test through the same fd.
int test_byte(int fd, int byte)
{
    struct flock fl = {};
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_type = F_WRLCK;
    if (fcntl(fd, F_OFD_GETLK, &fl) == -1) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

// EAGAIN and EACCES just mean "somebody holds it": QEMU leaves the errno text
// out then.
void set_lock_error(Error& err, int errnum, const std::string& message)
{
    if (errnum == EAGAIN || errnum == EACCES) {
        err.set("%s", message.c_str());
    } else {
        err.set_errno(errnum, "%s", message.c_str());
    }
}

// The lock bytes one open file description holds.
class ImageLocks {
public:
    // Locks byte 100+i for each bit i of `perm` and 200+i for each bit of
    // `unshared` not locked yet.  With `release`, bytes held but not asked
    // for are unlocked too.
    int apply(int fd, uint64_t perm, uint64_t unshared, bool release, Error& err)
    {
        int ret = apply_range(fd, kLockPermBase, perm, held_perm_, release, err);
        if (ret < 0) {
            return ret;
        }
        return apply_range(fd, kLockSharedBase, unshared, held_unshared_, release, err);
    }

private:
    static int apply_range(int fd, int base, uint64_t want, uint64_t& held, bool release,
                           Error& err)
    {
        for (int i = 0; i < kPermBits; i++) {
            uint64_t bit = 1ULL << i;
            if ((want & bit) && !(held & bit)) {
                int ret = lock_byte(fd, base + i, F_RDLCK);
                if (ret < 0) {
                    set_lock_error(err, -ret, string_printf("Failed to lock byte %d", base + i));
                    return ret;
                }
                held |= bit;
            } else if (release && (held & bit) && !(want & bit)) {
                int ret = lock_byte(fd, base + i, F_UNLCK);
                if (ret < 0) {
                    err.set_errno(-ret, "Failed to unlock byte %d", base + i);
                    return ret;
                }
                held &= ~bit;
            }
        }
        return 0;
    }

    uint64_t held_perm_ = 0;
    uint64_t held_unshared_ = 0;
};

// Fails if another open file description forbids what we want: someone who
// does not share a permission we take (their byte 200+i), or someone using a
// permission we refuse to share (their byte 100+i).
int check_lock_conflicts(int fd, uint64_t perm, uint64_t shared, Error& err)
{
    for (int i = 0; i < kPermBits; i++) {
        uint64_t bit = 1ULL << i;
        if (perm & bit) {
            int ret = test_byte(fd, kLockSharedBase + i);
            if (ret < 0) {
                set_lock_error(err, -ret, string_printf("Failed to get \"%s\" lock",
                                                        block_permission_name(bit)));
                return ret;
            }
        }
    }
    for (int i = 0; i < kPermBits; i++) {
        uint64_t bit = 1ULL << i;
        if (!(shared & bit)) {
            int ret = test_byte(fd, kLockPermBase + i);
            if (ret < 0) {
                set_lock_error(err, -ret, string_printf("Failed to get shared \"%s\" lock",
                                                        block_permission_name(bit)));
                return ret;
            }
        }
    }
    return 0;
}

void add_lock_hint(Error& err, const std::string& filename)
{
    err.add_hint(string_printf("Is another process using the image [%s]?", filename.c_str()));
}

// --- O_DIRECT alignment -----------------------------------------------------------

// Largest alignment worth probing: a page or 4 KiB, whichever is bigger.
size_t max_probe_alignment()
{
    return std::max<size_t>(4096, size_t(sysconf(_SC_PAGESIZE)));
}

struct DirectIoAlignment {
    uint32_t request = 1;  // offsets and lengths
    uint32_t memory = 1;   // buffer addresses
};

// Does an O_DIRECT read of len bytes at buf work?  Only EINVAL is the
// kernel's "misaligned"; other errors (a failing disk) say nothing about
// alignment.
bool direct_read_works(int fd, void* buf, size_t len)
{
    ssize_t ret = pread(fd, buf, len, 0);
    return ret >= 0 || errno != EINVAL;
}

// Finds what O_DIRECT on fd needs: the device's logical block size or XFS's
// minimum, else the smallest read that works.  Reads of an empty or
// unallocated file succeed at any alignment, so "1 works" means "we cannot
// tell" and the safe maximum is used.  false if nothing works.
bool probe_direct_io_alignment(int fd, DirectIoAlignment& out)
{
    static const size_t kCandidates[] = {1, 512, 1024, 2048, 4096};
    const size_t max_align = max_probe_alignment();
    uint32_t request = 0;
    uint32_t memory = 0;

    unsigned int sector_size;
    if (ioctl(fd, BLKSSZGET, &sector_size) == 0) {
        request = sector_size;
    }
    // XFS_IOC_DIOINFO, defined here to avoid needing the xfsprogs headers.
    struct XfsDioAttr {
        uint32_t d_mem;
        uint32_t d_miniosz;
        uint32_t d_maxiosz;
    } dio;
    if (ioctl(fd, _IOR('X', 30, XfsDioAttr), &dio) == 0) {
        request = dio.d_miniosz;  // d_mem is known to be wrong
    }

    try {
        if (!request) {
            AlignedBuffer buf(max_align, max_align);
            for (size_t align : kCandidates) {
                if (direct_read_works(fd, buf.data(), align)) {
                    request = align != 1 ? uint32_t(align) : uint32_t(max_align);
                    break;
                }
            }
        }
        AlignedBuffer buf(2 * max_align, max_align);
        for (size_t align : kCandidates) {
            if (direct_read_works(fd, buf.data() + align, max_align)) {
                memory = align != 1 ? uint32_t(align) : request;
                break;
            }
        }
    } catch (const std::bad_alloc&) {
        return false;
    }
    if (!request || !memory) {
        return false;
    }
    out.request = request;
    out.memory = memory;
    return true;
}

// NFS accepts O_DIRECT at any alignment (and probing would find nothing).
bool direct_io_byte_aligned(int fd)
{
    struct statfs sfs;
    return fstatfs(fd, &sfs) == 0 && sfs.f_type == NFS_SUPER_MAGIC;
}

// --- Blocking helpers (run on a thread pool) --------------------------------------

int ioctl_range(int fd, unsigned long request, uint64_t offset, uint64_t bytes)
{
    uint64_t range[2] = {offset, bytes};
    return translate_unsupported(retry_eintr([&] { return ioctl(fd, request, range); }));
}

// Writes zeroes over the first block of a file that has just grown from
// empty: probing O_DIRECT alignment on an unallocated file learns nothing.
// Like QEMU this writes 512 bytes into files smaller than 4 KiB, even if
// that makes them longer.
void allocate_first_block(int fd, uint64_t file_size)
{
    size_t write_size = file_size < 4096 ? BDRV_SECTOR_SIZE : 4096;
    try {
        AlignedBuffer buf(write_size, max_probe_alignment());
        memset(buf.data(), 0, write_size);
        retry_eintr([&] { return int(pwrite(fd, buf.data(), write_size, 0)); });
    } catch (const std::bad_alloc&) {
        // Only an optimisation: nothing lost.
    }
}

// Resizes a regular file to `offset` and fills the new space per `prealloc`
// (QEMU's handle_aiocb_truncate).  Failed preallocation restores the old
// length.
int truncate_regular_file(int fd, uint64_t offset, PreallocMode prealloc, Error& err)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int ret = -errno;
        err.set_errno(-ret, "Could not stat file");
        return ret;
    }
    uint64_t current = uint64_t(st.st_size);
    if (current > offset && prealloc != PreallocMode::Off) {
        err.set("Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }

    int ret = 0;
    switch (prealloc) {
    case PreallocMode::Off:
        if (ftruncate(fd, off_t(offset)) != 0) {
            ret = -errno;
            err.set_errno(-ret, "Could not resize file");
        } else if (current == 0 && offset > 0) {
            allocate_first_block(fd, offset);
        }
        return ret;

    case PreallocMode::Falloc:
        if (offset != current) {
            // posix_fallocate returns the error instead of setting errno.
            int e = posix_fallocate(fd, off_t(current), off_t(offset - current));
            if (e != 0) {
                ret = -e;
                err.set_errno(e, "Could not preallocate new data");
            } else if (current == 0) {
                allocate_first_block(fd, offset);
            }
        }
        break;

    case PreallocMode::Full: {
        if (ftruncate(fd, off_t(offset)) != 0) {
            ret = -errno;
            err.set_errno(-ret, "Could not resize file");
            break;
        }
        constexpr size_t kChunk = 64 * KiB;
        std::vector<uint8_t> zeroes(kChunk, 0);
        for (uint64_t pos = current; pos < offset;) {
            size_t n = size_t(std::min<uint64_t>(kChunk, offset - pos));
            int written =
                retry_eintr([&] { return int(pwrite(fd, zeroes.data(), n, off_t(pos))); });
            if (written < 0) {
                ret = written;
                err.set_errno(-ret, "Could not write zeros for preallocation");
                break;
            }
            pos += uint64_t(written);
        }
        if (ret == 0 && fsync(fd) < 0) {
            ret = -errno;
            err.set_errno(-ret, "Could not flush file to disk");
        }
        break;
    }

    case PreallocMode::Metadata:
        err.set("Unsupported preallocation mode: %s", prealloc_mode_name(prealloc));
        return -ENOTSUP;
    }

    if (ret < 0 && ftruncate(fd, off_t(current)) < 0) {
        error_report("Failed to restore old file length: %s", strerror(errno));
    }
    return ret;
}

bool parse_prealloc_option(QDict& opts, PreallocMode& mode, Error& err)
{
    mode = PreallocMode::Off;
    auto value = opts.take("preallocation");
    if (value && !parse_prealloc_mode(*value, mode)) {
        err.set("invalid parameter value: %s", value->c_str());
        return false;
    }
    return true;
}

// --- Creating files -------------------------------------------------------------

// btrfs: no copy-on-write for this file.  Only an optimisation, so failure
// is fine.
void set_nocow(int fd)
{
    int attr;
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
}

// Asks the file system (XFS) to allocate in extents of `hint` bytes.
// Failure is not fatal; it is worth a warning only if the user asked.
void set_extent_size_hint(int fd, uint32_t hint, bool user_given)
{
    struct fsxattr attr;
    int ret = ioctl(fd, FS_IOC_FSGETXATTR, &attr);
    if (ret == 0) {
        attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
        attr.fsx_extsize = hint;
        ret = ioctl(fd, FS_IOC_FSSETXATTR, &attr);
    }
    if (ret < 0 && user_given && hint != 0) {
        warn_report("Failed to set extent size hint: %s", strerror(errno));
    }
}

struct FileCreateOptions {
    std::string path;
    uint64_t size = 0;
    PreallocMode prealloc = PreallocMode::Off;
    bool nocow = false;
    uint32_t extent_size_hint = 0;
    bool extent_size_hint_given = false;
};

// Empties and sizes a newly opened (maybe pre-existing) file.  Blocking.
int create_regular_file(int fd, const FileCreateOptions& o, Error& err)
{
    // Emptying the file needs WRITE and sizing it RESIZE; RESIZE is not
    // shared because we promise the file ends up with the requested size.
    const uint64_t perm = BLK_PERM_WRITE | BLK_PERM_RESIZE;
    const uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    if (ofd_locks_supported()) {
        // The locks go away with the file descriptor.
        ImageLocks locks;
        int ret = locks.apply(fd, perm, ~shared & BLK_PERM_ALL, false, err);
        if (ret == 0) {
            ret = check_lock_conflicts(fd, perm, shared, err);
            if (ret < 0) {
                add_lock_hint(err, o.path);
            }
        }
        if (ret < 0) {
            return ret;
        }
    }
    int ret = truncate_regular_file(fd, 0, PreallocMode::Off, err);
    if (ret < 0) {
        return ret;
    }
    if (o.nocow) {
        set_nocow(fd);
    }
    set_extent_size_hint(fd, o.extent_size_hint, o.extent_size_hint_given);
    return truncate_regular_file(fd, o.size, o.prealloc, err);
}

// --- The node -----------------------------------------------------------------------

enum class AioBackend { IoUring, Threads };

uint64_t round_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) / align * align;
}

uint32_t host_page_size()
{
    return uint32_t(sysconf(_SC_PAGESIZE));
}

// Reads at least this large are worth a hand-off to a kernel worker.
constexpr size_t kOffloadReadBytes = 64 * KiB;
constexpr size_t kInlineReadMaxBytes = 1 * MiB;

// One open file or device node, for both drivers: host_device_ selects the
// device type check and the ioctl-based discard and write-zeroes.
class PosixFileState : public BlockDriverState {
public:
    PosixFileState(const BlockDriver& drv, AioContext& ctx, bool host_device)
        : BlockDriverState(drv, ctx), host_device_(host_device)
    {
    }
    ~PosixFileState() override
    {
        if (lock_fd_ >= 0) {
            close(lock_fd_);  // drops our lock bytes
        }
        if (fd_ >= 0) {
            close(fd_);
        }
    }

    Task<int> drv_open(QDict& options, Error& err) override;
    Task<int> drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                         unsigned flags) override;
    Task<int> drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov, size_t qiov_offset,
                          unsigned flags) override;
    unsigned supported_write_flags() const override { return BDRV_REQ_FUA; }
    unsigned supported_zero_flags() const override
    {
        return BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    }
    Task<int> drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags) override;
    Task<int> drv_pdiscard(uint64_t offset, uint64_t bytes) override;
    Task<int> drv_flush_to_disk() override;
    Task<int> drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned flags,
                           Error& err) override;
    Task<int> drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                               BlockStatus& out) override;
    void drv_refresh_limits(BlockLimits& bl) override;
    int drv_set_perm(uint64_t perm, uint64_t shared, Error& err) override;
    int drv_get_info(BlockDriverInfo&) override { return 0; }
    Task<int64_t> drv_get_allocated_file_size() override;
    // A new regular file is all holes; a device keeps its old contents.
    bool drv_has_zero_init() override { return !host_device_; }
    void drv_get_specific_info(nlohmann::ordered_json& info) const override;

    // Zoned block devices (block/file-posix-zoned.h).
    Task<int> drv_zone_report(uint64_t offset, uint32_t& nr_zones,
                              BlockZoneDescriptor* zones) override;
    Task<int> drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len) override;
    Task<int> drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags) override;

private:
    bool parse_open_options(QDict& options, Error& err);
    int open_fd(Error& err);
    int64_t current_length() const;
    void probe_max_transfer(const struct stat& st);
    int open_zones(const struct stat& st, Error& err);

    Task<int> run_blocking(std::function<int()> fn);
    Task<int> submit_rw(bool write, const iovec* iov, unsigned niov, uint64_t offset,
                        int rw_flags);
    std::optional<int> nowait_rw(bool write, const iovec* iov, unsigned niov, uint64_t offset);
    std::optional<int> read_inline(const iovec* iov, unsigned niov, uint64_t offset);
    std::optional<int> write_inline(const iovec* iov, unsigned niov, uint64_t offset);
    Task<int> submit_fallocate(int mode, uint64_t offset, uint64_t bytes);
    Task<int> transfer(bool write, uint64_t offset, uint64_t bytes, IOVector& qiov,
                       size_t qiov_offset, int rw_flags);
    bool needs_bounce(const IOVector& io) const;
    Task<int> zero_file_range(uint64_t offset, uint64_t bytes);
    Task<int> zero_device_range(uint64_t offset, uint64_t bytes, unsigned flags);
    int find_allocation(uint64_t start, uint64_t& data, uint64_t& hole) const;

    const bool host_device_;
    std::string path_;
    unsigned reads_in_flight_ = 0;  // io_uring reads, for offloading
    bool nowait_reads_ = true;      // cleared if RWF_NOWAIT reads are refused
    int fd_ = -1;
    // The lock bytes live on an open file description of their own that no
    // I/O ever uses: io_uring requests hold a reference to the description
    // of fd_, and after kill -9 a dying ring keeps it (and would keep locks
    // on it) for up to some 100 ms past the process.  -1 without locking.
    int lock_fd_ = -1;
    AioBackend aio_ = AioBackend::IoUring;
    bool native_aio_ = false;  // aio=native was asked for
    bool use_lock_ = false;
    bool direct_ = false;
    bool needs_alignment_ = false;
    DirectIoAlignment align_;
    uint64_t max_transfer_ = 0;

    // Capabilities, cleared when the file (system) turns out to lack them.
    bool has_discard_ = true;
    bool has_write_zeroes_ = true;
    bool has_fallocate_ = false;
    // After a failed fdatasync the page cache may hold pages marked clean
    // that never reached the disk: every later flush must fail too.
    int page_cache_error_ = 0;

    ImageLocks locks_;
    uint64_t perm_ = 0;
    uint64_t shared_ = BLK_PERM_ALL;

    InlineWritePolicy inline_writes_;
    // Set for a zoned block device (host_device only).
    std::unique_ptr<HostZones> zones_;
};

bool PosixFileState::parse_open_options(QDict& options, Error& err)
{
    path_ = take_string(options, "filename");

    auto aio = options.take("aio");
    if (!aio || *aio == "io_uring") {
        aio_ = AioBackend::IoUring;
    } else if (*aio == "threads") {
        aio_ = AioBackend::Threads;
    } else if (*aio == "native") {
        // QEMU's Linux AIO; io_uring is the kernel's native asynchronous
        // I/O now.  Its O_DIRECT requirement is checked once the file is open.
        aio_ = AioBackend::IoUring;
        native_aio_ = true;
    } else {
        err.set("invalid parameter value: %s", aio->c_str());
        return false;
    }

    std::string locking = take_string(options, "locking", "auto");
    if (locking == "auto") {
        use_lock_ = ofd_locks_supported();
    } else if (locking == "on") {
        if (!ofd_locks_supported()) {
            err.set("File lock requested but OFD locking syscall is unavailable");
            return false;
        }
        use_lock_ = true;
    } else if (locking == "off") {
        use_lock_ = false;
    } else {
        err.set("invalid parameter value: %s", locking.c_str());
        return false;
    }
    return true;
}

int PosixFileState::open_fd(Error& err)
{
    int flags = (read_only() ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct_ ? O_DIRECT : 0);
    fd_ = open(path_.c_str(), flags);
    if (fd_ < 0) {
        int e = errno;
        if (e == EINVAL && direct_) {
            int fd = open(path_.c_str(), flags & ~O_DIRECT);
            if (fd >= 0) {
                close(fd);
                err.set("Could not open '%s': filesystem does not support O_DIRECT",
                        path_.c_str());
                return -EINVAL;
            }
        }
        err.set_errno(e, "Could not open '%s'", path_.c_str());
        return e == EROFS ? -EACCES : -e;
    }
    if (use_lock_) {
        lock_fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (lock_fd_ < 0) {
            int e = errno;
            err.set_errno(e, "Could not open '%s' for locking", path_.c_str());
            return -e;
        }
    }
    if (!read_only()) {
        // A block device can be read-only (blockdev --setro) although
        // open(O_RDWR) works; writes would fail later with EPERM.
        struct stat st;
        int ro = 0;
        int ret = 0;
        if (fstat(fd_, &st) < 0) {
            ret = -errno;
        } else if (S_ISBLK(st.st_mode)) {
            if (ioctl(fd_, BLKROGET, &ro) < 0) {
                ret = -errno;
            } else if (ro) {
                ret = -EACCES;
            }
        }
        if (ret < 0) {
            err.set_errno(-ret, "The device is not writable");
            return ret;
        }
    }
    return 0;
}

int64_t PosixFileState::current_length() const
{
    struct stat st;
    if (fstat(fd_, &st) < 0) {
        return -errno;
    }
    if (S_ISREG(st.st_mode)) {
        return st.st_size;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t bytes;
        if (ioctl(fd_, BLKGETSIZE64, &bytes) < 0) {
            return -errno;
        }
        return int64_t(bytes);
    }
    off_t end = lseek(fd_, 0, SEEK_END);
    return end < 0 ? -errno : int64_t(end);
}

// The largest request the device takes in one piece: the block queue's
// max_sectors_kb (partitions have no queue directory), else BLKSECTGET.
void PosixFileState::probe_max_transfer(const struct stat& st)
{
    std::string path = string_printf("/sys/dev/block/%u:%u/queue/max_sectors_kb",
                                     major(st.st_rdev), minor(st.st_rdev));
    if (FILE* f = fopen(path.c_str(), "re")) {
        unsigned long kb = 0;
        if (fscanf(f, "%lu", &kb) == 1) {
            max_transfer_ = uint64_t(kb) * KiB;
        }
        fclose(f);
    }
    unsigned short sectors = 0;
    if (max_transfer_ == 0 && ioctl(fd_, BLKSECTGET, &sectors) == 0) {
        max_transfer_ = uint64_t(sectors) * BDRV_SECTOR_SIZE;
    }
}

Task<int> PosixFileState::drv_open(QDict& options, Error& err)
{
    if (!parse_open_options(options, err)) {
        co_return -EINVAL;
    }
    direct_ = open_flags() & BDRV_O_NOCACHE;
    int ret = open_fd(err);
    if (ret < 0) {
        co_return ret;
    }
    if (native_aio_ && !direct_) {
        err.set("aio=native was specified, but it requires cache.direct=on, which was not "
                "specified.");
        co_return -EINVAL;
    }

    struct stat st;
    if (fstat(fd_, &st) < 0) {
        ret = -errno;
        err.set_errno(-ret, "Could not stat file");
        co_return ret;
    }
    if (!host_device_) {
        if (!S_ISREG(st.st_mode)) {
            err.set("'file' driver requires '%s' to be a regular file", path_.c_str());
            co_return -EINVAL;
        }
        has_fallocate_ = true;
    } else if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) {
        err.set("'host_device' driver requires '%s' to be either a character or block device",
                path_.c_str());
        co_return -EINVAL;
    }

    needs_alignment_ = direct_ && !direct_io_byte_aligned(fd_);
    if (needs_alignment_ && !probe_direct_io_alignment(fd_, align_)) {
        err.set("Could not find working O_DIRECT alignment");
        err.add_hint("Try cache.direct=off");
        co_return -EINVAL;
    }
    if (S_ISBLK(st.st_mode)) {
        probe_max_transfer(st);
        if (host_device_ && (ret = open_zones(st, err)) < 0) {
            co_return ret;
        }
    }

    int64_t length = current_length();
    if (length < 0) {
        err.set_errno(int(-length), "Could not refresh total sector count");
        co_return int(length);
    }
    // QEMU counts sizes in sectors: a file's tail reads as zeroes up to the
    // next sector boundary (and writing there extends the file).
    set_total_bytes(round_up(uint64_t(length), BDRV_SECTOR_SIZE));
    co_return 0;
}

// A zoned device gets its geometry from its queue's sysfs directory
// (partitions have none, and are used as plain devices).
int PosixFileState::open_zones(const struct stat& st, Error& err)
{
    std::string queue = string_printf("/sys/dev/block/%u:%u/queue", major(st.st_rdev),
                                      minor(st.st_rdev));
    SysfsZoned geometry;
    int ret = read_sysfs_zoned(queue, geometry, err);
    if (ret < 0 || geometry.model == BlockZoneModel::None) {
        return ret;
    }
    auto zones = std::make_unique<HostZones>(
        fd_, geometry, [this](std::function<int()> fn) { return run_blocking(std::move(fn)); });
    ret = zones->load(err);
    if (ret < 0) {
        return ret;
    }
    zones_ = std::move(zones);
    return 0;
}

Task<int> PosixFileState::run_blocking(std::function<int()> fn)
{
    co_return co_await ctx().thread_pool().run(std::move(fn));
}

Task<int> PosixFileState::submit_rw(bool write, const iovec* iov, unsigned niov, uint64_t offset,
                                    int rw_flags)
{
    if (aio_ == AioBackend::IoUring) {
        if (write) {
            // FUA writes wait for the device: never inline.
            if (!direct_ && rw_flags == 0) {
                if (std::optional<int> ret = write_inline(iov, niov, offset)) {
                    co_return *ret;
                }
            }
            co_return co_await ctx().pwritev(fd_, iov, niov, offset, rw_flags,
                                             direct_ ? IoPath::Device : IoPath::Cached);
        }
        // The kernel copies a read that the page cache serves in this thread.
        // While other reads are in flight, large ones go to its workers so
        // that their copies spread over the CPUs (32 x 1 MiB in flight: 20%
        // faster on two CPUs); a lone read is quicker inline, and O_DIRECT
        // reads never keep this thread busy.
        IoPath path = IoPath::Device;
        if (!direct_) {
            size_t bytes = iov_bytes(iov, niov);
            bool offload = reads_in_flight_ > 0 && bytes >= kOffloadReadBytes;
            // Reads of 1 MiB and more go to the ring, where concurrent ones
            // are offloaded (inline, 32 x 1 MiB at once ran 1.3x slower).
            if (!offload && bytes < kInlineReadMaxBytes) {
                if (std::optional<int> ret = read_inline(iov, niov, offset)) {
                    co_return *ret;
                }
            }
            path = offload ? IoPath::CachedOffload : IoPath::Cached;
        }
        reads_in_flight_++;
        int ret = co_await ctx().preadv(fd_, iov, niov, offset, path);
        reads_in_flight_--;
        co_return ret;
    }
    int fd = fd_;
    co_return co_await run_blocking([=] {
        ssize_t ret = write ? pwritev2(fd, iov, int(niov), off_t(offset), rw_flags)
                            : preadv(fd, iov, int(niov), off_t(offset));
        // One call moves at most MAX_RW_COUNT (< 2 GiB) bytes: fits an int.
        return ret < 0 ? -errno : int(ret);
    });
}

// One RWF_NOWAIT transfer in this thread: the bytes moved (short when the
// rest would block), nullopt when nothing could move without blocking (then
// io_uring's worker waits), or -errno.  EOPNOTSUPP means the file refuses
// RWF_NOWAIT for this direction.
std::optional<int> PosixFileState::nowait_rw(bool write, const iovec* iov, unsigned niov,
                                             uint64_t offset)
{
    ssize_t ret = write ? pwritev2(fd_, iov, int(niov), off_t(offset), RWF_NOWAIT)
                        : preadv2(fd_, iov, int(niov), off_t(offset), RWF_NOWAIT);
    if (ret >= 0) {
        return int(ret);
    }
    if (errno == EAGAIN) {
        return std::nullopt;
    }
    return -errno;
}

// A page-cache read served in this thread from what the cache holds: what
// io_uring would do first, without an SQE, a CQE and a trip through the loop
// (2x faster for cached 4 KiB reads at depth 1); nullopt leaves it to
// io_uring.
std::optional<int> PosixFileState::read_inline(const iovec* iov, unsigned niov, uint64_t offset)
{
    if (!nowait_reads_) {
        return std::nullopt;
    }
    std::optional<int> ret = nowait_rw(false, iov, niov, offset);
    if (ret == -EOPNOTSUPP) {
        nowait_reads_ = false;
        return std::nullopt;
    }
    return ret;
}

// A page-cache write copied into the cache in this thread (see
// block/inline-write-policy.h); nullopt leaves it to io_uring.
std::optional<int> PosixFileState::write_inline(const iovec* iov, unsigned niov, uint64_t offset)
{
    int64_t start = AioContext::now_ns();
    if (!inline_writes_.allows(start)) {
        return std::nullopt;
    }
    if (inline_writes_.try_nowait()) {
        std::optional<int> ret = nowait_rw(true, iov, niov, offset);
        if (ret != -EOPNOTSUPP) {
            return ret;
        }
        inline_writes_.nowait_unsupported();
    }
    ssize_t ret = pwritev2(fd_, iov, int(niov), off_t(offset), 0);
    int err = errno;
    inline_writes_.record(start, AioContext::now_ns(), iov_bytes(iov, niov));
    return ret < 0 ? -err : int(ret);
}

Task<int> PosixFileState::submit_fallocate(int mode, uint64_t offset, uint64_t bytes)
{
    int ret;
    if (aio_ == AioBackend::IoUring) {
        do {
            ret = co_await ctx().fallocate(fd_, mode, offset, bytes);
        } while (ret == -EINTR);
    } else {
        int fd = fd_;
        ret = co_await run_blocking([=] {
            return retry_eintr([=] { return fallocate(fd, mode, off_t(offset), off_t(bytes)); });
        });
    }
    co_return translate_unsupported(ret);
}

// O_DIRECT wants every buffer address aligned to the memory alignment and
// every segment length to the block size; the kernel also takes at most
// IOV_MAX segments per call.
bool PosixFileState::needs_bounce(const IOVector& io) const
{
    if (io.count() > IOV_MAX) {
        return true;
    }
    if (!needs_alignment_) {
        return false;
    }
    size_t len_align = std::max(align_.memory, align_.request);
    for (const iovec& v : io.iovs()) {
        if (uintptr_t(v.iov_base) % align_.memory != 0 || v.iov_len % len_align != 0) {
            return true;
        }
    }
    return false;
}

// Moves all `bytes`, resubmitting the rest after short transfers.  A read
// that reaches the end of the file fills the rest with zeroes, as QEMU does
// for files whose size is not a multiple of the alignment.
Task<int> PosixFileState::transfer(bool write, uint64_t offset, uint64_t bytes, IOVector& qiov,
                                   size_t qiov_offset, int rw_flags)
{
    IOVector io;
    io.add_slice(qiov, qiov_offset, bytes);
    AlignedBuffer bounce;
    bool bounced = needs_bounce(io);
    if (bounced) {
        try {
            bounce = AlignedBuffer(bytes, std::max(align_.memory, host_page_size()));
        } catch (const std::bad_alloc&) {
            co_return -ENOMEM;
        }
        if (write) {
            qiov.to_buf(qiov_offset, bounce.data(), bytes);
        }
        io.clear();
        io.add(bounce.data(), bytes);
    }

    uint64_t done = 0;
    while (done < bytes) {
        IOVector rest;
        rest.add_slice(io, done, bytes - done);
        int ret = co_await submit_rw(write, rest.data(), rest.count(), offset + done, rw_flags);
        if (ret == -EINTR || ret == -EAGAIN) {
            continue;
        }
        if (!write && ret == 0) {
            break;  // end of file
        }
        if (!write && ret == -EINVAL && needs_alignment_ && done > 0) {
            // After a short O_DIRECT read the next offset is misaligned and
            // the kernel refuses it: the short read was the end of file.
            break;
        }
        if (ret < 0) {
            co_return ret;
        }
        if (ret == 0) {
            co_return -EIO;  // a write that makes no progress
        }
        done += uint64_t(ret);
    }

    if (!write) {
        io.memset(done, 0, bytes - done);
        if (bounced) {
            qiov.from_buf(qiov_offset, bounce.data(), bytes);
        }
    }
    co_return 0;
}

Task<int> PosixFileState::drv_preadv(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                     size_t qiov_offset, unsigned)
{
    co_return co_await transfer(false, offset, bytes, qiov, qiov_offset, 0);
}

Task<int> PosixFileState::drv_pwritev(uint64_t offset, uint64_t bytes, IOVector& qiov,
                                      size_t qiov_offset, unsigned flags)
{
    // cache.no-flush gives up durability: FUA goes the way of flushes.
    bool fua = (flags & BDRV_REQ_FUA) && !(open_flags() & BDRV_O_NO_FLUSH);
    int rw_flags = fua ? RWF_DSYNC : 0;
    if (zones_) {
        HostZones::WriteFn io = [&](uint64_t at) {
            return transfer(true, at, bytes, qiov, qiov_offset, rw_flags);
        };
        int ret = co_await zones_->write(offset, bytes, io);
        co_return ret;
    }
    co_return co_await transfer(true, offset, bytes, qiov, qiov_offset, rw_flags);
}

Task<int> PosixFileState::drv_zone_report(uint64_t offset, uint32_t& nr_zones,
                                          BlockZoneDescriptor* zones)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    co_return co_await zones_->report(offset, nr_zones, zones);
}

Task<int> PosixFileState::drv_zone_mgmt(BlockZoneOp op, uint64_t offset, uint64_t len)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    co_return co_await zones_->mgmt(op, offset, len, total_bytes());
}

// Linux has no zone append for user space: a write at the zone's cached
// write pointer, serialised with the zone's other writes (as QEMU).
Task<int> PosixFileState::drv_zone_append(uint64_t& offset, IOVector& qiov, unsigned flags)
{
    if (!zones_) {
        co_return -ENOTSUP;
    }
    std::vector<size_t> lengths;
    for (const iovec& v : qiov.iovs()) {
        lengths.push_back(v.iov_len);
    }
    int ret = zones_->check_append(offset, lengths);
    if (ret < 0) {
        co_return ret;
    }
    const uint64_t bytes = qiov.size();
    bool fua = (flags & BDRV_REQ_FUA) && !(open_flags() & BDRV_O_NO_FLUSH);
    HostZones::WriteFn io = [&](uint64_t at) {
        return transfer(true, at, bytes, qiov, 0, fua ? RWF_DSYNC : 0);
    };
    ret = co_await zones_->append(offset, bytes, io);
    co_return ret;
}

// QEMU's format-specific data of a file node ("file": extent size hint,
// never set on devices), with the zoned geometry of a zoned device.
void PosixFileState::drv_get_specific_info(nlohmann::ordered_json& info) const
{
    if (!zones_) {
        return;
    }
    const BlockLimits& bl = limits();
    nlohmann::ordered_json zoned;
    zoned["mode"] = bl.zoned == BlockZoneModel::HostAware ? "host-aware" : "host-managed";
    zoned["zone-size"] = bl.zone_size;
    zoned["zone-capacity"] = bl.zone_capacity;
    zoned["nr-zones"] = bl.nr_zones;
    zoned["max-open-zones"] = bl.max_open_zones;
    zoned["max-active-zones"] = bl.max_active_zones;
    zoned["max-append-bytes"] = bl.max_append_bytes;
    zoned["write-granularity"] = bl.write_granularity;
    info["type"] = "file";
    info["data"] = nlohmann::ordered_json{{"zoned", zoned}};
}

Task<int> PosixFileState::drv_flush_to_disk()
{
    if (page_cache_error_) {
        co_return -page_cache_error_;
    }
    int ret;
    if (aio_ == AioBackend::IoUring) {
        ret = co_await ctx().fdatasync(fd_);
    } else {
        int fd = fd_;
        ret = co_await run_blocking([fd] { return retry_eintr([fd] { return fdatasync(fd); }); });
    }
    if (ret < 0 && !direct_) {
        page_cache_error_ = -ret;  // O_DIRECT bypasses the page cache
    }
    co_return ret;
}

Task<int> PosixFileState::drv_pdiscard(uint64_t offset, uint64_t bytes)
{
    if (!has_discard_) {
        co_return -ENOTSUP;
    }
    int ret;
    if (host_device_) {
        int fd = fd_;
        ret = co_await run_blocking([=] { return ioctl_range(fd, BLKDISCARD, offset, bytes); });
    } else {
        ret = co_await submit_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    }
    if (ret == -ENOTSUP) {
        has_discard_ = false;
    }
    co_return ret;
}

Task<int> PosixFileState::drv_pwrite_zeroes(uint64_t offset, uint64_t bytes, unsigned flags)
{
    if (flags & BDRV_REQ_MAY_UNMAP) {
        // A punched hole reads as zeroes and frees the space in one go
        // (block devices discard with guaranteed zeroing).
        int ret = co_await submit_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                            bytes);
        if (ret != -ENOTSUP && ret != -EINVAL && ret != -EBUSY) {
            co_return ret;
        }
    }
    if (host_device_) {
        co_return co_await zero_device_range(offset, bytes, flags);
    }
    co_return co_await zero_file_range(offset, bytes);
}

Task<int> PosixFileState::zero_device_range(uint64_t offset, uint64_t bytes, unsigned flags)
{
    // BLKZEROOUT falls back to writing zeroes inside the kernel, which a
    // caller asking for NO_FALLBACK does not want.
    if (!has_write_zeroes_ || (flags & BDRV_REQ_NO_FALLBACK)) {
        co_return -ENOTSUP;
    }
    int fd = fd_;
    int ret = co_await run_blocking([=] { return ioctl_range(fd, BLKZEROOUT, offset, bytes); });
    if (ret == -ENOTSUP) {
        has_write_zeroes_ = false;
    }
    co_return ret;
}

// Zeroes a range of a regular file without writing data, trying in turn:
// ZERO_RANGE; punching a hole and allocating it again; allocating past the
// end of the file.  EINVAL from a file system that dislikes the range moves
// on to the next method.
Task<int> PosixFileState::zero_file_range(uint64_t offset, uint64_t bytes)
{
    if (has_write_zeroes_) {
        int ret = co_await submit_fallocate(FALLOC_FL_ZERO_RANGE, offset, bytes);
        if (ret == -ENOTSUP) {
            has_write_zeroes_ = false;
        } else if (ret != -EINVAL) {
            co_return ret;
        }
    }
    if (has_discard_ && has_fallocate_) {
        int ret = co_await submit_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                                            bytes);
        if (ret == 0) {
            ret = co_await submit_fallocate(0, offset, bytes);
            if (ret != -ENOTSUP) {
                co_return ret;
            }
            has_fallocate_ = false;
        } else if (ret == -ENOTSUP) {
            has_discard_ = false;
        } else if (ret != -EINVAL) {
            co_return ret;
        }
    }
    int64_t length = current_length();
    if (has_fallocate_ && length >= 0 && offset >= uint64_t(length)) {
        int ret = co_await submit_fallocate(0, offset, bytes);
        if (ret != -ENOTSUP) {
            co_return ret;
        }
        has_fallocate_ = false;
    }
    co_return -ENOTSUP;
}

Task<int> PosixFileState::drv_truncate(uint64_t offset, bool exact, PreallocMode prealloc, unsigned,
                                       Error& err)
{
    struct stat st;
    if (fstat(fd_, &st) < 0) {
        int ret = -errno;
        err.set_errno(-ret, "Failed to fstat() the file");
        co_return ret;
    }
    if (S_ISREG(st.st_mode)) {
        // Regular files always get exactly `offset` bytes.
        int fd = fd_;
        int ret = co_await run_blocking([fd, offset, prealloc, &err] {
            return truncate_regular_file(fd, offset, prealloc, err);
        });
        if (ret < 0) {
            co_return ret;
        }
        int64_t length = current_length();
        if (length >= 0) {
            set_total_bytes(round_up(uint64_t(length), BDRV_SECTOR_SIZE));
        }
        co_return 0;
    }

    // Devices keep their size: shrinking is fine if not exact, since the
    // user only needs that many bytes.
    if (prealloc != PreallocMode::Off) {
        err.set("Preallocation mode '%s' unsupported for this non-regular file",
                prealloc_mode_name(prealloc));
        co_return -ENOTSUP;
    }
    int64_t length = current_length();
    if (length < 0) {
        err.set_errno(int(-length), "Failed to get the device size");
        co_return int(length);
    }
    if (exact && offset != uint64_t(length)) {
        err.set("Cannot resize device files");
        co_return -ENOTSUP;
    }
    if (offset > uint64_t(length)) {
        err.set("Cannot grow device files");
        co_return -EINVAL;
    }
    co_return 0;
}

// Where is the data around `start`?  In data: data = start, hole = the next
// hole.  In a hole followed by data: hole = start, data = the next data.
// -ENXIO in a trailing hole or beyond the end; other errors: no idea.
int PosixFileState::find_allocation(uint64_t start, uint64_t& data, uint64_t& hole) const
{
    off_t offs = lseek(fd_, off_t(start), SEEK_DATA);
    if (offs < 0) {
        return -errno;
    }
    if (uint64_t(offs) < start) {
        return -EIO;  // not a valid answer from lseek
    }
    if (uint64_t(offs) > start) {
        hole = start;
        data = uint64_t(offs);
        return 0;
    }
    offs = lseek(fd_, off_t(start), SEEK_HOLE);
    if (offs < 0) {
        return -errno;
    }
    if (uint64_t(offs) < start) {
        return -EIO;
    }
    if (uint64_t(offs) > start) {
        data = start;
        hole = uint64_t(offs);
        return 0;
    }
    return -EBUSY;  // someone punched a hole between the two calls
}

Task<int> PosixFileState::drv_block_status(bool want_zero, uint64_t offset, uint64_t bytes,
                                           BlockStatus& out)
{
    out.map = offset;
    out.file = this;
    out.pnum = bytes;
    unsigned status = BDRV_BLOCK_DATA;
    if (want_zero) {
        uint64_t data = 0, hole = 0;
        int ret = find_allocation(offset, data, hole);
        if (ret == -ENXIO) {
            status = BDRV_BLOCK_ZERO;  // trailing hole (or the file shrank)
        } else if (ret < 0) {
            status = BDRV_BLOCK_DATA;  // no information: assume data
        } else if (data == offset) {
            // A partial block at the end of the file counts as a whole one.
            out.pnum = std::min(round_up(hole - offset, limits().request_alignment), bytes);
        } else {
            status = BDRV_BLOCK_ZERO;
            out.pnum = std::min(data - offset, bytes);
        }
    }
    out.flags = status | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    co_return 0;
}

void PosixFileState::drv_refresh_limits(BlockLimits& bl)
{
    bl.request_alignment = needs_alignment_ ? align_.request : 1;
    bl.min_mem_alignment = needs_alignment_ ? align_.memory : 1;
    bl.opt_mem_alignment = std::max(bl.min_mem_alignment, host_page_size());
    bl.max_iov = IOV_MAX;
    bl.max_transfer = max_transfer_;
    if (zones_) {
        zones_->apply_limits(bl);
    }
}

// Takes the new lock bytes before checking for conflicts, so that two
// processes racing for the same image cannot both pass the check; on
// conflict everything returns to the previous state.
int PosixFileState::drv_set_perm(uint64_t perm, uint64_t shared, Error& err)
{
    if (!use_lock_) {
        return 0;
    }
    bool only_relaxing = (perm_ | perm) == perm_ && (shared_ & shared) == shared_;
    if (!only_relaxing) {
        int ret = locks_.apply(lock_fd_, perm_ | perm, (~shared_ | ~shared) & BLK_PERM_ALL, false, err);
        if (ret == 0) {
            ret = check_lock_conflicts(lock_fd_, perm, shared, err);
            if (ret < 0) {
                add_lock_hint(err, path_);
            }
        }
        if (ret < 0) {
            Error unlock_err;
            if (locks_.apply(lock_fd_, perm_, ~shared_ & BLK_PERM_ALL, true, unlock_err) < 0) {
                warn_report("%s", unlock_err.message.c_str());
            }
            return ret;
        }
    }
    // Dropping bytes only fails if something is badly wrong; the new
    // permissions stand regardless.
    Error unlock_err;
    if (locks_.apply(lock_fd_, perm, ~shared & BLK_PERM_ALL, true, unlock_err) < 0) {
        warn_report("%s", unlock_err.message.c_str());
    }
    perm_ = perm;
    shared_ = shared;
    return 0;
}

Task<int64_t> PosixFileState::drv_get_allocated_file_size()
{
    struct stat st;
    if (fstat(fd_, &st) < 0) {
        co_return -errno;
    }
    co_return int64_t(st.st_blocks) * 512;
}

// --- The drivers ------------------------------------------------------------------

const OptionSchema& posix_open_schema()
{
    static const OptionSchema schema = {
        {"filename", OptionType::String, "File name of the image", ""},
        {"aio", OptionType::String, "host AIO implementation (threads, native, io_uring)", ""},
        {"locking", OptionType::String, "file locking mode (on/off/auto, default: auto)", ""},
    };
    return schema;
}

class FileDriver final : public BlockDriver {
public:
    std::string_view name() const override { return "file"; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return "file"; }
    const OptionSchema& open_schema() const override { return posix_open_schema(); }

    const OptionSchema* create_schema() const override
    {
        static const OptionSchema schema = {
            {"size", OptionType::Size, "Virtual disk size", ""},
            {"nocow", OptionType::Bool, "Turn off copy-on-write (valid only on btrfs)", ""},
            {"preallocation", OptionType::String,
             "Preallocation mode (allowed values: off, falloc, full)", ""},
            {"extent_size_hint", OptionType::Size,
             "Extent size hint for the image file, 0 to disable", ""},
        };
        return &schema;
    }

    Task<int> co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                        Error& err) const override
    {
        FileCreateOptions o;
        o.path = starts_with(filename, "file:") ? filename.substr(5) : filename;
        auto size = take_size(opts, "size", 0, err);
        o.extent_size_hint_given = opts.has("extent_size_hint");
        auto hint = take_size(opts, "extent_size_hint", 1 * MiB, err);
        auto nocow = take_bool(opts, "nocow", false, err);
        if (!size || !hint || !nocow || !parse_prealloc_option(opts, o.prealloc, err)) {
            co_return -EINVAL;
        }
        if (*hint > UINT32_MAX) {
            err.set("Extent size hint is too large");
            co_return -EINVAL;
        }
        o.size = round_up(*size, BDRV_SECTOR_SIZE);
        o.nocow = *nocow;
        o.extent_size_hint = uint32_t(*hint);

        int fd = open(o.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            int e = errno;
            err.set_errno(e, "Could not create '%s'", o.path.c_str());
            co_return -e;
        }
        int ret;
        // Preallocation can take long: keep the event loop running.
        ret = co_await ctx.thread_pool().run([fd, &o, &err] { return create_regular_file(fd, o, err); });
        if (close(fd) != 0 && ret == 0) {
            ret = -errno;
            err.set_errno(-ret, "Could not close the new file");
        }
        co_return ret;
    }

    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<PosixFileState>(*this, ctx, false);
    }
};

class HostDeviceDriver final : public BlockDriver {
public:
    std::string_view name() const override { return "host_device"; }
    bool is_protocol() const override { return true; }
    std::string_view protocol_prefix() const override { return "host_device"; }
    const OptionSchema& open_schema() const override { return posix_open_schema(); }

    // Any device node, as QEMU: character devices are served too.
    int probe_device(const std::string& filename) const override
    {
        struct stat st;
        if (stat(filename.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
            return 100;
        }
        return 0;
    }

    const OptionSchema* create_schema() const override
    {
        static const OptionSchema schema = {
            {"size", OptionType::Size, "Virtual disk size", ""},
            {"preallocation", OptionType::String, "Preallocation mode (allowed values: off)", ""},
        };
        return &schema;
    }

    // A device cannot be created, only checked to be large enough and have
    // its first sector cleared so no old format is probed there (QEMU's
    // bdrv_co_create_opts_simple).
    Task<int> co_create(const std::string& filename, QDict& opts, AioContext& ctx,
                        Error& err) const override
    {
        auto size = take_size(opts, "size", 0, err);
        PreallocMode prealloc;
        if (!size || !parse_prealloc_option(opts, prealloc, err)) {
            co_return -EINVAL;
        }
        if (prealloc != PreallocMode::Off) {
            err.set("Unsupported preallocation mode '%s'", prealloc_mode_name(prealloc));
            co_return -ENOTSUP;
        }

        QDict options;
        options.set("driver", "host_device");
        auto bs = co_await bdrv_co_open(filename, options, BDRV_O_RDWR | BDRV_O_RESIZE, ctx, err);
        if (!bs || bs->update_permissions(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE |
                                              BLK_PERM_RESIZE,
                                          BLK_PERM_ALL, err) < 0) {
            err.prepend("Protocol driver 'host_device' does not support image creation, and "
                        "opening the image failed: ");
            co_return -EINVAL;
        }
        BdrvChild root;
        root.name = "root";
        root.bs = bs;
        int ret = co_await bdrv_co_truncate(&root, *size, false, PreallocMode::Off, 0, err);
        if (ret < 0) {
            co_return ret;
        }
        uint64_t clear = std::min<uint64_t>(*size, BDRV_SECTOR_SIZE);
        if (clear > 0) {
            ret = co_await bdrv_co_pwrite_zeroes(&root, 0, clear, BDRV_REQ_MAY_UNMAP);
            if (ret < 0) {
                err.set_errno(-ret, "Failed to clear the new image's first sector");
                co_return ret;
            }
        }
        // Closing a node flushes it; as in QEMU, a failure there is not the
        // creation's.
        (void)co_await bdrv_co_flush(bs.get());
        co_return 0;
    }

    std::shared_ptr<BlockDriverState> new_node(AioContext& ctx) const override
    {
        return std::make_shared<PosixFileState>(*this, ctx, true);
    }
};

}  // namespace

const BlockDriver& bdrv_file_driver()
{
    static const FileDriver driver;
    return driver;
}

const BlockDriver& bdrv_host_device_driver()
{
    static const HostDeviceDriver driver;
    return driver;
}

}  // namespace qemu

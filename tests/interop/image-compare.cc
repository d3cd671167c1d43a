// interop-compare: reads an image through our block layer and compares the
// guest-visible contents with a raw reference file.
//
//   interop-compare [-f FMT] IMAGE RAW
//
// The interoperability suite needs "our reads equal the reference" for
// images QEMU wrote, and our qemu-img has no compare/convert to express
// that.  Besides the data, it checks that every range our block status calls
// zero really reads as zeroes in the reference (qemu-img map and convert
// trust that answer).
//
// Exit status: 0 identical, 1 different (the first difference is printed),
// 2 the comparison could not be done.
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "block/block-backend.h"
#include "qemu/iov.h"

namespace qemu {
namespace {

constexpr uint64_t kChunk = 1024 * 1024;

class RawReference {
public:
    explicit RawReference(const char* path) : fd_(open(path, O_RDONLY | O_CLOEXEC)) {}
    ~RawReference()
    {
        if (fd_ >= 0) {
            close(fd_);
        }
    }
    RawReference(const RawReference&) = delete;
    RawReference& operator=(const RawReference&) = delete;

    bool ok() const { return fd_ >= 0; }
    int64_t size() const { return lseek(fd_, 0, SEEK_END); }
    // Where the next data at or after offset starts (holes read as zeroes).
    uint64_t next_data(uint64_t offset) const
    {
        off_t pos = lseek(fd_, off_t(offset), SEEK_DATA);
        return pos < 0 ? UINT64_MAX : uint64_t(pos);
    }
    // Reads exactly len bytes (the file is as long as the image).
    bool read(uint64_t offset, uint64_t len, uint8_t* buf) const
    {
        while (len > 0) {
            ssize_t n = pread(fd_, buf, len, off_t(offset));
            if (n <= 0) {
                return false;
            }
            buf += n;
            offset += uint64_t(n);
            len -= uint64_t(n);
        }
        return true;
    }

private:
    int fd_;
};

int compare_data(BlockBackend& blk, const RawReference& raw, uint64_t size)
{
    std::vector<uint8_t> ours(kChunk), theirs(kChunk);
    for (uint64_t off = 0; off < size; off += kChunk) {
        uint64_t len = std::min(kChunk, size - off);
        int ret = blk.pread(off, len, ours.data());
        if (ret < 0) {
            printf("read of %" PRIu64 " bytes at offset %" PRIu64 " failed: %s\n", len, off,
                   strerror(-ret));
            return 2;
        }
        if (raw.next_data(off) >= off + len) {
            memset(theirs.data(), 0, len);
        } else if (!raw.read(off, len, theirs.data())) {
            printf("cannot read the reference at offset %" PRIu64 "\n", off);
            return 2;
        }
        if (memcmp(ours.data(), theirs.data(), len) != 0) {
            uint64_t i = 0;
            while (ours[i] == theirs[i]) {
                i++;
            }
            printf("Content mismatch at offset %" PRIu64 ": image 0x%02x, reference 0x%02x\n",
                   off + i, ours[i], theirs[i]);
            return 1;
        }
    }
    return 0;
}

int compare_zero_status(BlockBackend& blk, const RawReference& raw, uint64_t size)
{
    std::vector<uint8_t> buf(kChunk);
    uint64_t off = 0;
    while (off < size) {
        BlockStatus st;
        // The whole backing chain, as qemu-img convert and compare see it.
        int ret = run_sync(blk.ctx(), bdrv_co_block_status_above(blk.bs(), nullptr, true, off,
                                                                 size - off, st));
        if (ret < 0 || st.pnum == 0) {
            printf("block status at offset %" PRIu64 " failed: %s\n", off,
                   ret < 0 ? strerror(-ret) : "no progress");
            return 2;
        }
        uint64_t end = off + st.pnum;
        if (st.flags & BDRV_BLOCK_ZERO) {
            for (uint64_t pos = raw.next_data(off); pos < end; pos += kChunk) {
                uint64_t len = std::min(kChunk, end - pos);
                if (!raw.read(pos, len, buf.data())) {
                    printf("cannot read the reference at offset %" PRIu64 "\n", pos);
                    return 2;
                }
                if (!buffer_is_zero(buf.data(), len)) {
                    auto nz = std::find_if(buf.begin(), buf.end(), [](uint8_t b) { return b; });
                    printf("Block status says zero at offset %" PRIu64
                           " but the reference has 0x%02x there\n",
                           pos + uint64_t(nz - buf.begin()), *nz);
                    return 1;
                }
            }
        }
        off += st.pnum;
    }
    return 0;
}

int compare_main(int argc, char** argv)
{
    const char* format = nullptr;
    int c;
    while ((c = getopt(argc, argv, "f:")) != -1) {
        if (c != 'f') {
            return 2;
        }
        format = optarg;
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: interop-compare [-f FMT] IMAGE RAW\n");
        return 2;
    }
    set_program_name(argv[0]);
    AioContext ctx;
    bdrv_init();
    QDict options;
    if (format) {
        options.set("driver", format);
    }
    Error err;
    auto blk = BlockBackend::open(std::string(argv[optind]), std::move(options), 0, ctx, err);
    if (!blk) {
        fprintf(stderr, "interop-compare: Could not open '%s': %s\n", argv[optind],
                err.pretty().c_str());
        return 2;
    }
    RawReference raw(argv[optind + 1]);
    if (!raw.ok()) {
        fprintf(stderr, "interop-compare: cannot open '%s': %s\n", argv[optind + 1],
                strerror(errno));
        return 2;
    }
    uint64_t size = blk->getlength();
    if (raw.size() != int64_t(size)) {
        printf("Image size mismatch: image %" PRIu64 ", reference %" PRId64 "\n", size,
               raw.size());
        return 1;
    }
    int ret = compare_data(*blk, raw, size);
    if (ret == 0) {
        ret = compare_zero_status(*blk, raw, size);
    }
    if (ret == 0) {
        printf("Images are identical.\n");
    }
    return ret;
}

}  // namespace
}  // namespace qemu

int main(int argc, char** argv)
{
    return qemu::compare_main(argc, argv);
}

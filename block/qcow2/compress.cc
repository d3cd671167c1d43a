// Compressed clusters: raw deflate (zlib, window 2^12 as QEMU writes it) or
// a zstd frame, decompressed into exactly one cluster.
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <cerrno>

#include "qcow2.h"

namespace qemu::qcow2 {

ssize_t compress_cluster(CompressionType type, const uint8_t* in, size_t in_len, uint8_t* out,
                         size_t out_cap)
{
    if (type == CompressionType::Zstd) {
        size_t ret = ZSTD_compress(out, out_cap, in, in_len, ZSTD_CLEVEL_DEFAULT);
        if (ZSTD_isError(ret)) {
            return ZSTD_getErrorCode(ret) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
        }
        return ssize_t(ret);
    }
    z_stream strm{};
    if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -EIO;
    }
    strm.next_in = const_cast<uint8_t*>(in);
    strm.avail_in = uInt(in_len);
    strm.next_out = out;
    strm.avail_out = uInt(out_cap);
    int ret = deflate(&strm, Z_FINISH);
    ssize_t result = ret == Z_STREAM_END ? ssize_t(out_cap - strm.avail_out) : -ENOSPC;
    deflateEnd(&strm);
    return result;
}

int decompress_cluster(CompressionType type, const uint8_t* in, size_t in_len, uint8_t* out,
                       size_t out_len)
{
    if (type == CompressionType::Zstd) {
        // The compressed bytes may be followed by unrelated data in the last
        // sector: stream until the frame has produced a whole cluster.
        ZSTD_DCtx* dctx = ZSTD_createDCtx();
        if (!dctx) {
            return -ENOMEM;
        }
        ZSTD_inBuffer ib{in, in_len, 0};
        ZSTD_outBuffer ob{out, out_len, 0};
        int result = 0;
        while (ob.pos < ob.size) {
            size_t ret = ZSTD_decompressStream(dctx, &ob, &ib);
            if (ZSTD_isError(ret)) {
                result = -EIO;
                break;
            }
            if (ret == 0 || ib.pos == ib.size) {
                break;  // frame ended or input exhausted
            }
        }
        ZSTD_freeDCtx(dctx);
        if (result == 0 && ob.pos != ob.size) {
            result = -EIO;
        }
        return result;
    }
    z_stream strm{};
    if (inflateInit2(&strm, -12) != Z_OK) {
        return -EIO;
    }
    strm.next_in = const_cast<uint8_t*>(in);
    strm.avail_in = uInt(in_len);
    strm.next_out = out;
    strm.avail_out = uInt(out_len);
    int ret = inflate(&strm, Z_FINISH);
    // Stopping because the cluster is full is success; trailing bytes of
    // the last sector are not ours.
    bool ok = (ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) && strm.avail_out == 0;
    inflateEnd(&strm);
    return ok ? 0 : -EIO;
}

}  // namespace qemu::qcow2

// What qemu-io's command files share (private to qemu-io/): argument
// parsing with QEMU's messages, the output formats of the statistics, the
// request buffers, and the command table's entry type.  Each command file
// (rw-cmds.cc, image-cmds.cc, zone-cmds.cc) lists its commands for the
// table that qemu-io-cmds.cc builds.
#pragma once

#include <climits>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "qemu-io/qemu-io.h"
#include "qemu/units.h"

namespace qemu::qemu_io {

// QEMU's BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to whole sectors.
constexpr int64_t kMaxRequestBytes = (INT_MAX >> BDRV_SECTOR_BITS) << BDRV_SECTOR_BITS;

// --- Numbers in arguments --------------------------------------------------

// qemu-io's cvtnum() plus its error message: parses a size argument into
// value, or prints why not and returns -EINVAL / -ERANGE.  `shown` is what
// the message quotes (QEMU's truncate quotes the wrong word; see there).
int parse_size_arg(const char* arg, int64_t& value, const char* shown = nullptr);

// Parses the "OFFSET LENGTH" arguments at argv[optind] (leaving optind on
// LENGTH) and, with check_limit, refuses a length beyond one request as
// QEMU does; `qualifier` completes QEMU's message (" without -n").
int parse_offset_length(char** argv, int& optind, int64_t& offset, int64_t& length,
                        bool check_limit, const char* qualifier = "");

// A -P argument: one byte, in any base strtol() accepts.
int parse_pattern(const char* arg);

// --- Output formats --------------------------------------------------------

// QEMU qemu-io's cvtstr(): three decimals in the largest binary unit, with
// ".000" dropped ("4 KiB", "1.500 KiB", "411.772408 bytes").
std::string human_size(double value);

timespec now_monotonic();

timespec elapsed_since(const timespec& start);

double per_second(double value, const timespec& t);

// "00.00 sec" for short intervals, "H:MM:SS.ss" otherwise or when fixed.
std::string format_elapsed(const timespec& t, bool fixed);

// The statistics of a finished request; `machine` is -C's CSV form.
void print_report(const char* op, const timespec& t, int64_t offset, int64_t count,
                  int64_t total, int ops, bool machine);

// -v: 16 bytes a line, hex then alphanumerics.
void dump_buffer(const uint8_t* buf, int64_t offset, int64_t len);

// --- Request memory --------------------------------------------------------

constexpr size_t kMisalignBytes = 16;

// The data of one request, aligned for O_DIRECT, or misaligned on purpose
// by 16 bytes with -m to exercise the block layer's bounce buffers.
class IoBuffer {
public:
    IoBuffer(const QemuIoSession& s, size_t len, int fill)
        : shift_(s.misalign() ? kMisalignBytes : 0),
          mem_(len + shift_, alignment_for(s.blk())),
          len_(len)
    {
        memset(mem_.data(), fill, len + shift_);
    }
    uint8_t* data() const { return mem_.data() + shift_; }
    size_t size() const { return len_; }

private:
    static size_t alignment_for(const BlockBackend* blk)
    {
        const BlockLimits& bl = blk->bs()->limits();
        return std::max<size_t>({bl.opt_mem_alignment, bl.min_mem_alignment, sizeof(void*)});
    }

    size_t shift_;
    AlignedBuffer mem_;
    size_t len_;
};

// A request's buffer and the vector describing it.
struct RequestMemory {
    IoBuffer buf;
    IOVector qiov;
};

// The "len [len..]" arguments of readv/writev/aio_*: one iovec element per
// length over a single buffer filled with `pattern`.  Prints QEMU's message
// and returns null on a bad length.
std::unique_ptr<RequestMemory> create_iovec(const QemuIoSession& s, char** lens, int n,
                                            int pattern);

// write -s: the buffer holds the file's bytes, repeated to fill it.
std::unique_ptr<IoBuffer> buffer_from_file(const QemuIoSession& s, size_t len,
                                           const char* file_name);

bool matches_pattern(const uint8_t* buf, size_t len, int pattern);

// Is this block status "allocated" in QEMU's bdrv_is_allocated() sense?
// QEMU marks every range that reads as data or zeroes from this layer.
bool status_is_allocated(const BlockStatus& st);

// --- The command table -----------------------------------------------------

enum CommandFlags : unsigned {
    CMD_GLOBAL = 0x1,     // runs whatever the state (help, quit)
    CMD_NOFILE_OK = 0x2,  // runs without an open image
};

struct CommandInfo {
    const char* name;
    const char* altname;  // one-letter alias, or null
    int (*func)(QemuIoSession& s, int argc, char** argv);
    int argmin;
    int argmax;  // -1: no limit
    unsigned flags;
    uint64_t perm;  // BLK_PERM_* the command needs on the image
    const char* args;
    const char* oneline;
    const char* help;  // extended help for "help CMD", or null
};

// A usage error: the command's one-line synopsis.
int usage(const CommandInfo& ci);

// The "OFFSET LEN [LEN...]" arguments from argv[optind] on (readv, writev,
// aio_read, aio_write, zap): the offset, and create_iovec() of the
// lengths.  Returns 0, usage(ci) when fewer than two are left, or the
// failure with QEMU's message printed.
int parse_offset_and_iovec(const QemuIoSession& s, const CommandInfo& ci, int argc, char** argv,
                           int pattern, int64_t& offset, std::unique_ptr<RequestMemory>& mem);

// --- The commands of each file --------------------------------------------

std::vector<const CommandInfo*> read_write_commands();  // rw-cmds.cc
std::vector<const CommandInfo*> image_commands();       // image-cmds.cc
std::vector<const CommandInfo*> zone_commands();        // zone-cmds.cc

}  // namespace qemu::qemu_io

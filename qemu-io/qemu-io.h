// qemu-io: the interactive block I/O exerciser.
//
// A QemuIoSession holds the one image qemu-io works on and runs command lines
// against it ("read -P 0x11 0 4k", "aio_write 0 64k", "map", ...), printing
// exactly what QEMU 7.2's qemu-io prints.  qemu-io.cc owns the program: its
// command line, the -c list and the stdin prompt loop; qemu-io-cmds.cc owns
// the command table.
//
// Every command runs as a coroutine on the session's AioContext.  Synchronous
// commands wait for it with run_sync(); aio_read/aio_write start theirs and
// return at once, and their result lines appear whenever the event loop next
// runs: during a later command, while waiting for input, at aio_flush, close
// or exit.
#pragma once

#include <coroutine>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "block/block-backend.h"

namespace qemu {

// The open-time choices shared by qemu-io's command line and its open
// command (QEMU's flags + writethrough pair).
struct ImageOpenMode {
    // BDRV_O_*; qemu-io opens images with discard=unmap unless told otherwise.
    int flags = BDRV_O_UNMAP;
    // qemu-io runs with the write cache disabled by default: every write
    // carries FUA.  -n and most -t modes turn the cache on.
    bool writethrough = true;
    bool force_share = false;
    // The file driver's aio= mode (-i, -k); empty keeps the driver's default.
    std::string aio;
};

class QemuIoSession {
public:
    // image_opts: file names given to open are --image-opts option strings.
    // misalign: offset every I/O buffer by 16 bytes from its alignment (-m).
    QemuIoSession(AioContext& ctx, bool image_opts, bool misalign);
    // Lets outstanding aio_* requests report, then closes the image.
    ~QemuIoSession();
    QemuIoSession(const QemuIoSession&) = delete;
    QemuIoSession& operator=(const QemuIoSession&) = delete;

    // Opens the image unless one is already open; a null filename opens
    // from options alone.  Prints QEMU's message and returns false on error.
    bool open(const std::string* filename, QDict options, const ImageOpenMode& mode);
    // Lets outstanding aio_* requests report, then closes the image.
    void close();

    // Runs one command line; the result is negative if the command failed.
    int run_command(const std::string& line);

    bool quit_requested() const { return quit_; }
    void request_quit() { quit_ = true; }

    AioContext& ctx() const { return ctx_; }
    BlockBackend* blk() const { return blk_.get(); }
    bool image_opts() const { return image_opts_; }
    bool misalign() const { return misalign_; }
    // Request flags every write gets (FUA while the write cache is off).
    unsigned write_flags() const { return writethrough_ ? unsigned(BDRV_REQ_FUA) : 0u; }

    // --- aio_* requests -------------------------------------------------

    // Bookkeeping around each detached aio_* coroutine: started when it is
    // spawned (returning its sequence number), finished once it has printed
    // its result.
    uint64_t aio_started()
    {
        aio_pending_++;
        return aio_sequence_++;
    }
    void aio_finished() { aio_pending_--; }
    bool has_pending_aio() const { return aio_pending_ > 0; }
    // Runs the event loop until every aio_* request has reported (aio_flush).
    void drain();

    // co_await session.report_turn(seq) once request `seq` has completed.
    // Completed requests report together, from the event loop, once none
    // is still running, the most recently started first: QEMU hands
    // completions back through LIFO lists (its thread pool and bottom
    // halves), and qemu-io's output shows that order.
    class ReportTurn {
    public:
        ReportTurn(QemuIoSession& s, uint64_t seq) : s_(s), seq_(seq) {}
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}

    private:
        QemuIoSession& s_;
        uint64_t seq_;
    };
    ReportTurn report_turn(uint64_t seq) { return ReportTurn(*this, seq); }

private:
    AioContext& ctx_;
    std::unique_ptr<BlockBackend> blk_;
    bool image_opts_;
    bool misalign_;
    bool writethrough_ = true;
    bool quit_ = false;
    unsigned aio_pending_ = 0;
    uint64_t aio_sequence_ = 0;
    // Completed aio_* requests waiting to report, by sequence number.
    std::vector<std::pair<uint64_t, std::coroutine_handle<>>> report_queue_;
    bool report_scheduled_ = false;

    Task<void> report_completed();
};

}  // namespace qemu

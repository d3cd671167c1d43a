// qemu-img snapshot: lists, creates, applies and deletes internal snapshots,
// with QEMU 7.2's options, listing and messages.  As in QEMU 7.2 the command
// takes no -f: the format is always probed (or given with --image-opts).
// -a looks the snapshot up by ID and then by name, -d by name only.
#include <sys/time.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "block/snapshot.h"
#include "commands.h"
#include "tool.h"

namespace qemu::img {

void dump_snapshots(const std::vector<SnapshotInfo>& snapshots)
{
    if (snapshots.empty()) {
        return;
    }
    printf("Snapshot list:\n%s\n", bdrv_snapshot_dump(nullptr).c_str());
    for (const SnapshotInfo& sn : snapshots) {
        printf("%s\n", bdrv_snapshot_dump(&sn).c_str());
    }
}

namespace {

enum class Action { None, List, Create, Apply, Delete };

// QEMU keeps the name in a 256-byte buffer.
constexpr size_t kMaxNameBytes = 255;

}  // namespace

int img_snapshot(int argc, char** argv)
{
    enum { kObject = 256, kImageOpts };
    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"object", required_argument, nullptr, kObject},
        {"image-opts", no_argument, nullptr, kImageOpts},
        {"force-share", no_argument, nullptr, 'U'},
        {nullptr, 0, nullptr, 0},
    };
    ImageSpec spec;
    Action action = Action::None;
    std::string snapshot_name;
    int flags = BDRV_O_RDWR;
    int c;
    while ((c = get_option(argc, argv, ":la:c:d:hqU", long_options)) != -1) {
        Action chosen = Action::None;
        switch (c) {
        case 'l':
            chosen = Action::List;
            flags &= ~BDRV_O_RDWR;  // listing needs no write access
            break;
        case 'a':
            chosen = Action::Apply;
            break;
        case 'c':
            chosen = Action::Create;
            break;
        case 'd':
            chosen = Action::Delete;
            break;
        case 'q':
            break;  // nothing is printed on success anyway
        case 'U':
            spec.force_share = true;
            break;
        case kObject:
            error_report("--object is not supported");
            return 1;
        case kImageOpts:
            spec.image_opts = true;
            break;
        }
        if (chosen != Action::None) {
            if (action != Action::None) {
                error_exit("Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = chosen;
            if (chosen != Action::List) {
                snapshot_name = optarg;
            }
        }
    }
    if (optind != argc - 1) {
        error_exit("Expecting one image file name");
    }
    spec.filename = argv[optind];

    AioContext ctx;
    auto blk = open_image(spec, flags, ctx);
    if (!blk) {
        return 1;
    }
    BlockDriverState* bs = blk->bs();
    int ret = 0;
    switch (action) {
    case Action::None:
        break;
    case Action::List: {
        std::vector<SnapshotInfo> snapshots;
        bdrv_snapshot_list(bs, snapshots);
        dump_snapshots(snapshots);
        break;
    }
    case Action::Create: {
        SnapshotInfo sn;
        sn.name = snapshot_name.substr(0, kMaxNameBytes);
        timeval tv;
        gettimeofday(&tv, nullptr);
        sn.date_sec = uint32_t(tv.tv_sec);
        sn.date_nsec = uint32_t(tv.tv_usec * 1000);
        sn.icount = 0;  // what QEMU's tools record: they run no guest
        ret = run_sync(ctx, bdrv_snapshot_create(bs, sn));
        if (ret < 0) {
            error_report("Could not create snapshot '%s': %d (%s)", snapshot_name.c_str(), ret,
                         result_strerror(ret));
        }
        break;
    }
    case Action::Apply: {
        Error err;
        ret = run_sync(ctx, bdrv_snapshot_goto(bs, snapshot_name, err));
        if (ret < 0) {
            report_error(err, "Could not apply snapshot '" + snapshot_name + "': ");
        }
        break;
    }
    case Action::Delete: {
        SnapshotInfo sn;
        if (!bdrv_snapshot_find(bs, snapshot_name, sn)) {
            error_report("Could not delete snapshot '%s': snapshot not found", snapshot_name.c_str());
            ret = -ENOENT;
            break;
        }
        Error err;
        ret = run_sync(ctx, bdrv_snapshot_delete(bs, sn.id, sn.name, err));
        if (ret < 0) {
            report_error(err, "Could not delete snapshot '" + snapshot_name + "': ");
        }
        break;
    }
    }
    return ret < 0 ? 1 : 0;
}

}  // namespace qemu::img

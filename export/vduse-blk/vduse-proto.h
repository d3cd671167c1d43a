// The VDUSE protocol (vDPA Device in Userspace, Linux 5.15+, API version 0):
// the ioctls of /dev/vduse/control and /dev/vduse/NAME and the messages
// read from and written to the device fd, as in Linux's
// include/uapi/linux/vduse.h, written out here with the layout the kernel
// uses (static_asserts pin the sizes the ioctl numbers encode).
#pragma once

#include <linux/ioctl.h>

#include <cstdint>

namespace qemu::vduse {

constexpr unsigned kBase = 0x81;

struct DevConfig {
    char name[256];
    uint32_t vendor_id;
    uint32_t device_id;
    uint64_t features;
    uint32_t vq_num;
    uint32_t vq_align;
    uint32_t reserved[13];
    uint32_t config_size;
    // followed by config_size bytes of config space
};
static_assert(sizeof(DevConfig) == 336);

struct IotlbEntry {
    uint64_t offset;  // where the range starts in the returned fd
    uint64_t start;
    uint64_t last;    // inclusive
    uint8_t perm;     // kPermRead | kPermWrite
    uint8_t padding[7];
};
static_assert(sizeof(IotlbEntry) == 32);
constexpr uint8_t kPermRead = 1;   // VDUSE_ACCESS_RO
constexpr uint8_t kPermWrite = 2;  // VDUSE_ACCESS_WO

struct VqConfig {
    uint32_t index;
    uint16_t max_size;
    uint16_t reserved[13];
};
static_assert(sizeof(VqConfig) == 32);

struct VqInfo {
    uint32_t index;
    uint32_t num;
    uint64_t desc_addr;
    uint64_t driver_addr;
    uint64_t device_addr;
    union {
        uint16_t split_avail_index;
        uint16_t packed[4];
    };
    uint8_t ready;
};
static_assert(sizeof(VqInfo) == 48);

struct VqEventfd {
    uint32_t index;
    int32_t fd;  // -1: deassign
};

constexpr unsigned long kSetApiVersion = _IOW(kBase, 0x01, uint64_t);
constexpr unsigned long kCreateDev = _IOW(kBase, 0x02, DevConfig);
constexpr unsigned long kDestroyDev = _IOW(kBase, 0x03, char[256]);
constexpr unsigned long kIotlbGetFd = _IOWR(kBase, 0x10, IotlbEntry);
constexpr unsigned long kDevGetFeatures = _IOR(kBase, 0x11, uint64_t);
constexpr unsigned long kVqSetup = _IOW(kBase, 0x14, VqConfig);
constexpr unsigned long kVqGetInfo = _IOWR(kBase, 0x15, VqInfo);
constexpr unsigned long kVqSetupKickfd = _IOW(kBase, 0x16, VqEventfd);
constexpr unsigned long kVqInjectIrq = _IOW(kBase, 0x17, uint32_t);

// A split queue's state in GET_VQ_STATE (vduse_vq_state).
struct VqState {
    uint32_t index;
    uint16_t avail_index;
};

// Messages (read() from the device fd; each answered by a write()).
enum MsgType : uint32_t {
    kGetVqState = 0,
    kSetStatus = 1,
    kUpdateIotlb = 2,
};

struct DevRequest {
    uint32_t type;
    uint32_t request_id;
    uint32_t reserved[4];
    union {
        VqState vq_state;
        uint8_t status;
        struct {
            uint64_t start;
            uint64_t last;
        } iova;
        uint32_t padding[32];
    };
};
static_assert(sizeof(DevRequest) == 152);

constexpr uint32_t kResultOk = 0;
constexpr uint32_t kResultFailed = 1;

struct DevResponse {
    uint32_t request_id;
    uint32_t result;
    uint32_t reserved[4];  // must be zero
    union {
        VqState vq_state;
        uint32_t padding[32];
    };
};
static_assert(sizeof(DevResponse) == 152);

// virtio device status bits (virtio 1.2, 2.1).
constexpr uint8_t kStatusDriverOk = 4;
constexpr uint8_t kStatusNeedsReset = 64;
constexpr uint64_t kFeatureAccessPlatform = 1ull << 33;
constexpr uint32_t kVirtioIdBlock = 2;

}  // namespace qemu::vduse

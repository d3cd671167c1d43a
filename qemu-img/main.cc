// qemu-img: the command line of QEMU's disk image utility, for the commands
// qemu-zoned implements.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"
#include "tool.h"

namespace qemu::img {

namespace {

struct Command {
    const char* name;
    int (*run)(int argc, char** argv);
    const char* syntax;
};

const Command kCommands[] = {
    {"amend", img_amend,
     "amend [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename"},
    {"bench", img_bench,
     "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] "
     "[--image-opts] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] "
     "[-S step_size] [-t cache] [-w] [-U] filename"},
    {"check", img_check,
     "check [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] "
     "filename"},
    {"commit", img_commit,
     "commit [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] "
     "filename"},
    {"compare", img_compare,
     "compare [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 "
     "filename2"},
    {"convert", img_convert,
     "convert [--image-opts] [--target-image-opts] [--target-is-zero] [-U] [-C] [-c] [-p] [-q] "
     "[-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] "
     "[-o options] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] "
     "filename [filename2 [...]] output_filename"},
    {"create", img_create,
     "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]"},
    {"dd", img_dd,
     "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] "
     "[skip=blocks] if=input of=output"},
    {"info", img_info,
     "info [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename"},
    {"map", img_map,
     "map [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] "
     "[-U] filename"},
    {"measure", img_measure,
     "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--image-opts] [-f fmt] "
     "filename]"},
    {"rebase", img_rebase,
     "rebase [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-c] "
     "-b backing_file [-F backing_fmt] filename"},
    {"resize", img_resize,
     "resize [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename "
     "[+ | -]size"},
    {"snapshot", img_snapshot,
     "snapshot [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] "
     "filename"},
};

const char kVersion[] =
    "qemu-img version 7.2.0 (qemu-zoned " QEMU_ZONED_VERSION ")\n"
    "Copyright (c) the qemu-zoned developers\n";

}  // namespace

void help()
{
    printf("%s", kVersion);
    printf("usage: qemu-img [standard options] command [command options]\n"
           "QEMU disk image utility\n"
           "\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "\n"
           "Command syntax:\n");
    for (const Command& cmd : kCommands) {
        printf("  %s\n", cmd.syntax);
    }
    printf("\n"
           "Command parameters:\n"
           "  'filename' names the image file; with --image-opts it is an option\n"
           "    string such as 'driver=raw,file.filename=disk.img'\n"
           "  'fmt' is the image format; without -f it is detected from the image\n"
           "  'cache' is the host cache mode: 'none', 'writeback' (the default),\n"
           "    'writethrough', 'directsync' or 'unsafe'\n"
           "  'aio' is the host AIO mode: 'io_uring' (the default), 'threads' or 'native'\n"
           "  'size' is the image size in bytes; the suffixes 'k' or 'K', 'M', 'G', 'T',\n"
           "    'P' and 'E' multiply by 1024, 1024^2, ... 1024^6 ('b' means bytes)\n"
           "  'options' is a comma separated list of name=value format options; use\n"
           "    '-o help' to see those of a format (and, given a filename, of its\n"
           "    protocol)\n"
           "  'ofmt' is the output format, 'human' (the default) or 'json'\n"
           "  '-q' prints nothing but errors\n"
           "  '-U' opens the image even if another process uses it (read-only only)\n"
           "  '-h' with or without a command shows this help and lists the supported formats\n"
           "\n"
           "Parameters to amend subcommand:\n"
           "  'options' are the format options to change ('-o help' lists them;\n"
           "    for qcow2: compat, lazy_refcounts, refcount_bits, size); '-p'\n"
           "    shows the progress\n"
           "\n"
           "Parameters to bench subcommand:\n"
           "  '-c' is the number of requests (75000), '-d' how many are in flight at\n"
           "    once (64), '-s' the size of each (4k), '-o' the offset of the first\n"
           "    and '-S' the distance between two (the request size)\n"
           "  '-w' writes the '--pattern' byte (0) instead of reading; with\n"
           "    '--flush-interval' a flush follows every that many requests, after\n"
           "    the requests in flight are done unless '--no-drain' is given\n"
           "  '-n' selects native AIO, which needs '-t none'\n"
           "\n"
           "Parameters to check subcommand:\n"
           "  '-r leaks' repairs leaked clusters only; '-r all' repairs every kind of\n"
           "    error found, at a higher risk of choosing the wrong fix or of hiding\n"
           "    corruption that happened earlier\n"
           "  'src_cache' is the cache mode used while checking\n"
           "\n"
           "Parameters to commit subcommand:\n"
           "  'base' is the backing file (in the chain of 'filename') that receives\n"
           "    the data, by default the one right below; '-d' leaves 'filename' as\n"
           "    it is instead of emptying it ('-b' implies '-d'); 'rate_limit' caps\n"
           "    the write rate (bytes per second); '-p' shows the progress\n"
           "\n"
           "Parameters to compare subcommand:\n"
           "  '-f' and '-F' are the formats of the first and the second image\n"
           "  '-s' (strict) also counts a size or an allocation difference as one\n"
           "  '-p' shows the progress\n"
           "\n"
           "Parameters to convert subcommand:\n"
           "  'output_fmt' is the target's format (raw unless given), 'options' its\n"
           "    create options; '-n' writes to an existing target instead\n"
           "  'backing_file' (of format 'backing_fmt') becomes the target's backing\n"
           "    file: only what the source's top layer holds is copied\n"
           "  '-c' stores the target's clusters compressed (qcow2)\n"
           "  'sparse_size' is how many consecutive zero bytes are left unwritten\n"
           "    (4k); 0 writes them all, which leaves the target fully allocated\n"
           "  'num_coroutines' is how many copies are in flight (8, at most 16);\n"
           "    '-W' lets them write out of order\n"
           "  'rate_limit' caps the write rate (bytes per second)\n"
           "  'cache' is the target's cache mode ('unsafe' unless given), 'src_cache'\n"
           "    that of the sources\n"
           "  '-p' shows the progress\n"
           "\n"
           "Parameters to dd subcommand:\n"
           "  'bs=BYTES' copies BYTES at a time (512); 'skip=N' starts N blocks into\n"
           "    the input, 'count=N' copies N blocks from there; 'if=' and 'of=' name\n"
           "    the input image and the new output image (of format 'output_fmt', raw\n"
           "    unless given)\n"
           "\n"
           "Parameters to measure subcommand:\n"
           "  prints the size a new image of 'output_fmt' (raw unless given) with\n"
           "    'options' needs, for a disk of 'N' bytes or for the data of\n"
           "    'filename', and fully allocated\n"
           "\n"
           "Parameters to rebase subcommand:\n"
           "  'backing_file' becomes the backing file of 'filename' ('' for none),\n"
           "    of format 'backing_fmt'; unless '-u' (unsafe) is given, what differs\n"
           "    between the old and the new backing file is first copied into\n"
           "    'filename', so that it reads the same; 'src_cache' is the cache mode\n"
           "    of the backing files; '-p' shows the progress\n"
           "\n"
           "Parameters to resize subcommand:\n"
           "  'size' is the new size, or with '+' or '-' the change; shrinking needs\n"
           "    '--shrink', and 'prealloc' ('off', 'metadata', 'falloc' or 'full')\n"
           "    only applies to growing\n"
           "\n"
           "Parameters to snapshot subcommand:\n"
           "  '-l' prints the internal snapshots of the image, '-c' takes one called\n"
           "    'snapshot', '-a' makes the disk what it was when 'snapshot' (an ID or\n"
           "    a name) was taken, and '-d' removes the one called 'snapshot'\n");

    std::vector<std::string> formats;
    for (const BlockDriver* drv : bdrv_drivers()) {
        formats.emplace_back(drv->name());
    }
    std::sort(formats.begin(), formats.end());
    printf("\nSupported formats:");
    for (const std::string& name : formats) {
        printf(" %s", name.c_str());
    }
    printf("\n");
    exit(EXIT_SUCCESS);
}

}  // namespace qemu::img

int main(int argc, char** argv)
{
    using namespace qemu::img;
    qemu::set_program_name(argv[0]);
    qemu::bdrv_init();
    if (argc < 2) {
        error_exit("Not enough arguments");
    }

    static const option long_options[] = {
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, 'V'},
        {nullptr, 0, nullptr, 0},
    };
    // '+': options after the command name belong to the command.
    int c;
    while ((c = get_option(argc, argv, "+:hV", long_options)) != -1) {
        if (c == 'V') {
            printf("%s", kVersion);
            return 0;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        return 0;
    }
    optind = 0;  // the command parses its arguments afresh

    for (const Command& cmd : kCommands) {
        if (strcmp(argv[0], cmd.name) == 0) {
            return cmd.run(argc, argv);
        }
    }
    error_exit("Command not found: %s", argv[0]);
}

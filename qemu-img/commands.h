// The qemu-img commands.  Each takes the command line from the command name
// on (argv[0] is "create", ...) and returns the exit status.
#pragma once

namespace qemu::img {

int img_bench(int argc, char** argv);
int img_check(int argc, char** argv);
int img_compare(int argc, char** argv);
int img_convert(int argc, char** argv);
int img_create(int argc, char** argv);
int img_info(int argc, char** argv);
int img_map(int argc, char** argv);
int img_resize(int argc, char** argv);

}  // namespace qemu::img

// Helpers for tests of qemu-io's commands: run a command line through a
// QemuIoSession and capture what it prints.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include "qemu-io/qemu-io.h"

namespace qemu::test {

// Sends stdout and stderr to temporary files while alive.
class CapturedOutput {
public:
    CapturedOutput()
    {
        fflush(stdout);
        fflush(stderr);
        out_ = tmpfile();
        err_ = tmpfile();
        saved_out_ = dup(STDOUT_FILENO);
        saved_err_ = dup(STDERR_FILENO);
        dup2(fileno(out_), STDOUT_FILENO);
        dup2(fileno(err_), STDERR_FILENO);
    }
    ~CapturedOutput()
    {
        restore();
        fclose(out_);
        fclose(err_);
    }

    // Stops capturing; returns what was written to stdout / stderr.
    void finish(std::string& out, std::string& err)
    {
        restore();
        out = contents(out_);
        err = contents(err_);
    }

private:
    void restore()
    {
        if (saved_out_ < 0) {
            return;
        }
        fflush(stdout);
        fflush(stderr);
        dup2(saved_out_, STDOUT_FILENO);
        dup2(saved_err_, STDERR_FILENO);
        close(saved_out_);
        close(saved_err_);
        saved_out_ = saved_err_ = -1;
    }
    static std::string contents(FILE* f)
    {
        std::string s;
        rewind(f);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
            s.append(buf, n);
        }
        return s;
    }

    FILE* out_;
    FILE* err_;
    int saved_out_ = -1;
    int saved_err_ = -1;
};

struct CommandResult {
    int ret;
    std::string out;
    std::string err;
};

inline CommandResult run(QemuIoSession& s, const std::string& line)
{
    CommandResult r;
    CapturedOutput capture;
    r.ret = s.run_command(line);
    capture.finish(r.out, r.err);
    return r;
}

}  // namespace qemu::test

#include "progress.h"

#include <signal.h>

#include <cstdio>

namespace qemu::img {

namespace {

volatile sig_atomic_t report_requested = 0;

void request_report(int)
{
    report_requested = 1;
}

}  // namespace

ProgressMeter::ProgressMeter(bool enabled, float min_skip)
    : enabled_(enabled), min_skip_(min_skip)
{
    if (enabled_) {
        return;
    }
    struct sigaction action = {};
    sigfillset(&action.sa_mask);
    action.sa_handler = request_report;
    sigaction(SIGUSR1, &action, nullptr);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void ProgressMeter::update(float delta, int max)
{
    float current = max == 0 ? delta : current_ + delta / 100 * float(max);
    if (current > 100) {
        current = 100;
    }
    current_ = current;
    // As QEMU: a move by more than min_skip either way is printed (an
    // amend that starts a new operation may report less than before).
    if (current > last_print_ + min_skip_ || current < last_print_ - min_skip_ ||
        current == 100 || current == 0) {
        last_print_ = current_;
        print();
    }
}

void ProgressMeter::print()
{
    if (enabled_) {
        printf("    (%3.2f/100%%)\r", double(current_));
        fflush(stdout);
    } else if (report_requested) {
        fprintf(stderr, "    (%3.2f/100%%)\n", double(current_));
        report_requested = 0;
    }
}

void ProgressMeter::end()
{
    if (enabled_) {
        printf("\n");
    }
}

}  // namespace qemu::img

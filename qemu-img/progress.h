// The progress meter of qemu-img's -p option, printing exactly what QEMU's
// does: "    (NN.NN/100%)\r" on stdout whenever the progress moved by more
// than `min_skip` percent since the last line (and always at 0 and 100),
// and a newline at the end.
//
// Without -p nothing is printed, except that SIGUSR1 asks for one report
// (on stderr, ending in a newline), printed at the next progress update.
#pragma once

namespace qemu::img {

class ProgressMeter {
public:
    ProgressMeter(bool enabled, float min_skip);
    ProgressMeter(const ProgressMeter&) = delete;
    ProgressMeter& operator=(const ProgressMeter&) = delete;

    // With max == 0, `delta` is the absolute progress in percent; else the
    // progress grows by delta percent of `max` percent (a step that is
    // `max` percent of the whole job).
    void update(float delta, int max);
    // Ends the progress line (prints the final newline with -p).
    void end();

private:
    void print();

    bool enabled_;
    float min_skip_;
    float current_ = 0;
    float last_print_ = 0;
};

}  // namespace qemu::img

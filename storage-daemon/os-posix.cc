// Process-level parts of qemu-storage-daemon: signals, the PID file and
// --daemonize (QEMU's os-posix.c and util/oslib-posix.c).
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string>

#include "daemon.h"

namespace qemu {

namespace {

int signal_pipe[2] = {-1, -1};
std::string pidfile_path;    // absolute: removed after chdir("/") too
int daemon_pipe = -1;        // --daemonize: the write end to the parent

void on_termination_signal(int)
{
    int saved = errno;
    char c = 1;
    (void)!write(signal_pipe[1], &c, 1);
    errno = saved;
}

}  // namespace

void install_signal_handlers()
{
    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("pipe2");
        exit(1);
    }
    struct sigaction sa = {};
    sa.sa_handler = on_termination_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGHUP, SIGTERM}) {
        sigaction(sig, &sa, nullptr);
    }
    signal(SIGPIPE, SIG_IGN);
}

int signal_fd()
{
    return signal_pipe[0];
}

void signal_wake()
{
    on_termination_signal(0);
}

bool write_pidfile(const std::string& path, Error& err)
{
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, S_IRUSR | S_IWUSR);
    if (fd < 0) {
        err.set_errno(errno, "Cannot open pid file");
        return false;
    }
    struct flock lock = {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &lock) < 0) {
        err.set_errno(errno, "Cannot lock pid file");
        close(fd);
        return false;
    }
    std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd, 0) < 0 || write(fd, pid.data(), pid.size()) != ssize_t(pid.size())) {
        err.set_errno(errno, "Failed to write pid file");
        close(fd);
        return false;
    }
    // The fd stays open: the lock lives as long as we do.
    char real[PATH_MAX];
    pidfile_path = realpath(path.c_str(), real) ? real : path;
    return true;
}

void remove_pidfile()
{
    if (!pidfile_path.empty()) {
        unlink(pidfile_path.c_str());
        pidfile_path.clear();
    }
}

void daemonize_start()
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        perror("pipe2");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid > 0) {
        // The parent: exit 0 only on the child's single zero byte.
        close(fds[1]);
        char status = 1;
        ssize_t n;
        do {
            n = read(fds[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        _exit(n == 1 && status == 0 ? 0 : 1);
    }
    close(fds[0]);
    daemon_pipe = fds[1];
    setsid();
    pid = fork();
    if (pid < 0) {
        exit(1);
    }
    if (pid > 0) {
        _exit(0);
    }
    umask(027);
}

void daemonize_ready()
{
    if (daemon_pipe < 0) {
        return;
    }
    if (chdir("/") < 0) {
        error_report("not able to chdir to /: %s", strerror(errno));
        exit(1);
    }
    char zero = 0;
    (void)!write(daemon_pipe, &zero, 1);
    close(daemon_pipe);
    daemon_pipe = -1;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd : {0, 1, 2}) {
        dup2(null, fd);
    }
    close(null);
}

}  // namespace qemu

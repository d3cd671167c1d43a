// Coroutines for the block layer.
//
// Every block request runs as a C++20 coroutine returning Task<T>.  A Task
// starts eagerly, like a function call: it runs in the caller's stack until it
// first suspends (or finishes) and only then returns the Task object.  The
// caller co_awaits it (from a coroutine), or hands it to co_spawn()/run_sync()
// (from ordinary code).  A callee that already finished costs no suspension at
// all, so loops over synchronously completing requests (cache hits) use
// constant stack even where the compiler cannot turn symmetric transfer into
// a tail call (sanitizer and -O0 builds).  When a suspended callee finishes
// later, it resumes its awaiting caller, so stack depth is bounded by the
// coroutine call depth.
//
// Coroutines never migrate between threads: they are started, suspended and
// resumed in the thread that owns their AioContext.  Errors travel as negative
// errno values (the block layer's convention); exceptions escaping a coroutine
// terminate the process.
#pragma once

#include <coroutine>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace qemu {

template <typename T = void>
class [[nodiscard]] Task;

namespace detail {

// Resumes whoever awaited the finished coroutine, or nobody (co_spawn'ed).
struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <typename Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept
    {
        auto next = h.promise().continuation;
        return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
};

struct PromiseBase {
    std::coroutine_handle<> continuation;
    std::suspend_never initial_suspend() const noexcept { return {}; }
    FinalAwaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() const noexcept { std::terminate(); }
};

template <typename T>
struct Promise : PromiseBase {
    std::optional<T> value;
    Task<T> get_return_object() noexcept;
    template <typename U>
    void return_value(U&& v) { value.emplace(std::forward<U>(v)); }
};

template <>
struct Promise<void> : PromiseBase {
    Task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
};

}  // namespace detail

template <typename T>
class [[nodiscard]] Task {
public:
    using promise_type = detail::Promise<T>;
    using Handle = std::coroutine_handle<promise_type>;

    Task() = default;
    explicit Task(Handle h) : handle_(h) {}
    Task(Task&& o) noexcept : handle_(std::exchange(o.handle_, {})) {}
    Task& operator=(Task&& o) noexcept
    {
        if (this != &o) {
            destroy();
            handle_ = std::exchange(o.handle_, {});
        }
        return *this;
    }
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() { destroy(); }

    bool valid() const { return bool(handle_); }

    bool done() const { return handle_.done(); }

    // Awaiting a task suspends the caller until it finishes (not at all if
    // it already has).
    bool await_ready() const noexcept { return handle_.done(); }
    void await_suspend(std::coroutine_handle<> caller) noexcept
    {
        handle_.promise().continuation = caller;
    }
    T await_resume()
    {
        if constexpr (!std::is_void_v<T>) {
            return std::move(*handle_.promise().value);
        }
    }

private:
    void destroy()
    {
        if (handle_) {
            handle_.destroy();
        }
    }
    Handle handle_;
};

namespace detail {
template <typename T>
Task<T> Promise<T>::get_return_object() noexcept
{
    return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept
{
    return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}

// A self-owning coroutine that starts at once and frees itself when done.
struct Detached {
    struct promise_type {
        Detached get_return_object() const noexcept { return {}; }
        std::suspend_never initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };
};

inline Detached run_detached(Task<void> task)
{
    co_await task;
}
}  // namespace detail

// Lets a started task run on with nobody awaiting it (like a coroutine
// entered with qemu_coroutine_enter()); it frees itself when it finishes and
// must not outlive the objects it references.
inline void co_spawn(Task<void> task)
{
    detail::run_detached(std::move(task));
}

}  // namespace qemu

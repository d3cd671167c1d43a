// A private temporary directory for a test, removed with everything in it
// when the object goes.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>

// `prefix`: the directory's path up to the random suffix mkdtemp adds.  Use
// /var/tmp for images opened with O_DIRECT: on older kernels tmpfs refuses it.
class TempDir {
public:
    explicit TempDir(const std::string& prefix)
    {
        std::string tmpl = prefix + "XXXXXX";
        REQUIRE(mkdtemp(tmpl.data()) != nullptr);
        path_ = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path_); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

// demo.cpp: demo.c through the C++ wrapper (include/mla.hpp).
//
//   demo_cpp [path/to/model.safetensors]   (default tests/data/tutorial.safetensors)
//
// Maps the file, binds the tutorial layer's weights zero-copy, prefills the first
// half of the stored `inputs`, decodes the rest one token per step, and compares
// every output with the stored `outputs`. Exit status 0 only when the max error
// (max-abs error / max-abs reference) is at most 1e-5.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "mla.hpp"
#include "st_lite.h"

namespace {

constexpr double kTolerance = 1e-5;

/// A read-only memory map of a whole file.
class MappedFile {
public:
    explicit MappedFile(const std::string &path) {
        fd_ = ::open(path.c_str(), O_RDONLY);
        struct stat st {};
        if (fd_ < 0 || ::fstat(fd_, &st) != 0) {
            const std::string why = std::strerror(errno);
            close_fd();
            throw std::runtime_error("cannot open " + path + ": " + why);
        }
        if (st.st_size < 8) {
            close_fd();
            throw std::runtime_error(path + ": " + std::to_string(st.st_size) +
                                     " bytes, too short for a safetensors file");
        }
        len_ = static_cast<std::size_t>(st.st_size);
        void *p = ::mmap(nullptr, len_, PROT_READ, MAP_PRIVATE, fd_, 0);
        if (p == MAP_FAILED) {
            const std::string why = std::strerror(errno);
            close_fd();
            throw std::runtime_error("cannot map " + path + ": " + why);
        }
        data_ = static_cast<const unsigned char *>(p);
    }
    ~MappedFile() {
        if (data_ != nullptr) {
            ::munmap(const_cast<unsigned char *>(data_), len_);
        }
        close_fd();
    }
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;

    mla::span<const unsigned char> bytes() const { return {data_, len_}; }

    /// A stored F32 tensor, copied out (rows * cols floats).
    std::vector<float> tensor(const char *name, std::size_t &rows, std::size_t &cols) const {
        st_tensor t;
        if (st_find_f32(data_, len_, name, &t) != 0) {
            throw std::runtime_error(std::string("no F32 tensor '") + name + "' in the file");
        }
        std::vector<float> v(t.rows * t.cols);
        std::memcpy(v.data(), t.data, v.size() * sizeof(float));
        rows = t.rows;
        cols = t.cols;
        return v;
    }

private:
    void close_fd() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    int fd_ = -1;
    const unsigned char *data_ = nullptr;
    std::size_t len_ = 0;
};

double max_abs(const float *a, std::size_t n) {
    double m = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        m = std::max(m, std::fabs(static_cast<double>(a[i])));
    }
    return m;
}

/// max|out - ref| / max|ref| over n values.
double rel_err(const float *out, const float *ref, std::size_t n) {
    double e = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        e = std::max(e, std::fabs(static_cast<double>(out[i]) - static_cast<double>(ref[i])));
    }
    const double s = max_abs(ref, n);
    return e / (s > 0 ? s : 1.0);
}

double micros_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

int run(const std::string &path) {
    mla::check_abi();
    std::printf("mla-rt %s (C++ wrapper, header %s)\n", mla::version(), MLA_VERSION_STRING);

    const MappedFile file(path);
    const auto cfg = mla::Config::tutorial();
    cfg.validate();
    const auto weights =
        mla::Weights::from_safetensors(file.bytes(), cfg, "model.layers.0.self_attn.");
    mla::Engine engine(cfg, weights);
    std::printf("engine: %zu bytes, capacity %u tokens\n", engine.memory_bytes(),
                engine.capacity());

    const std::size_t full = static_cast<std::size_t>(cfg.num_heads) *
                             (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) *
                             sizeof(float);
    const std::size_t latent = cfg.cache_bytes_per_token();
    std::printf("cache per token: %zu bytes latent vs %zu bytes full K/V (%.2fx smaller)\n", latent,
                full, static_cast<double>(full) / static_cast<double>(latent));

    std::size_t T = 0, d = 0, rt = 0, dt = 0;
    const auto x = file.tensor("inputs", T, d);
    const auto ref = file.tensor("outputs", rt, dt);
    if (T == 0 || d != cfg.hidden_size || rt != T || dt != d) {
        throw std::runtime_error("inputs/outputs are not [T][hidden_size]");
    }
    std::vector<float> out(T * d);
    const mla::span<const float> xs(x);
    const mla::span<float> os(out);

    std::size_t prefill = std::max<std::size_t>(T / 2, 1);
    prefill = std::min<std::size_t>(prefill, cfg.max_tokens_per_call);
    auto t0 = std::chrono::steady_clock::now();
    engine.forward(xs.subspan(0, prefill * d), os.subspan(0, prefill * d));
    std::printf("prefill %2zu tokens: %9.1f us   rel err %.3g\n", prefill, micros_since(t0),
                rel_err(out.data(), ref.data(), prefill * d));
    for (std::size_t t = prefill; t < T; ++t) {
        t0 = std::chrono::steady_clock::now();
        engine.forward(xs.subspan(t * d, d), os.subspan(t * d, d));
        std::printf("decode pos %2zu:      %9.1f us   rel err %.3g\n", t, micros_since(t0),
                    rel_err(out.data() + t * d, ref.data() + t * d, d));
    }
    std::printf("cached tokens: %u\n", engine.len());

    // Errors are exceptions; a failed call leaves the engine as it was.
    try {
        engine.truncate(engine.len() + 1);
    } catch (const mla::Error &e) {
        std::printf("expected error: status %u: %s\n", e.status(), e.what());
    }

    // Batched decode: two more sequences (one empty, one after the prefill)
    // each get their next token in one call; the weights are read once.
    double batch_err = 0.0;
    if (prefill < T) {
        mla::Engine fresh(cfg, weights), warm(cfg, weights);
        std::vector<float> scratch(prefill * d), xb(2 * d), ob(2 * d);
        warm.forward(xs.subspan(0, prefill * d), mla::span<float>(scratch));
        std::copy(x.begin(), x.begin() + d, xb.begin());
        std::copy(x.begin() + prefill * d, x.begin() + (prefill + 1) * d, xb.begin() + d);
        mla::Engine *const both[] = {&fresh, &warm};
        mla::forward_batch(both, xb, ob);
        batch_err = std::max(rel_err(ob.data(), ref.data(), d),
                             rel_err(ob.data() + d, ref.data() + prefill * d, d));
        std::printf("batch of 2 (positions 0 and %zu): rel err %.3g\n", prefill, batch_err);
    }

    const double err = rel_err(out.data(), ref.data(), T * d);
    std::printf("max error: %.3g (max-abs error / max-abs reference, %zu x %zu values; "
                "tolerance %g)\n",
                err, T, d, kTolerance);
    const bool ok = err <= kTolerance && batch_err <= kTolerance;
    std::printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
    const std::string path = argc > 1 ? argv[1] : "tests/data/tutorial.safetensors";
    try {
        return run(path);
    } catch (const mla::Error &e) {
        std::fprintf(stderr, "demo_cpp: %s (status %u)\n", e.what(), e.status());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "demo_cpp: %s\n", e.what());
    }
    return 1;
}

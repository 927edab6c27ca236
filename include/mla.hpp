// mla.hpp: header-only C++17 RAII wrapper over the C ABI of mla-rt (mla.h).
//
//   auto cfg = mla::Config::tutorial();
//   auto w = mla::Weights::from_safetensors(file_bytes, cfg, "model.layers.0.self_attn.");
//   mla::Engine engine(cfg, w);                 // owns its 64-byte aligned arena
//   engine.forward(x, out);                     // x, out: [n_tokens][hidden_size]
//
// Errors are exceptions (mla::Error: status code + the library's message, from
// mla_last_error(engine), mla_config_validate, or, for calls without an engine,
// the calling thread's mla_last_error(NULL)).
// The weight data (e.g. a mapped file) is borrowed and must outlive the engine.
// One Engine per thread; Weights and the data behind them may be shared read-only.
#ifndef MLA_HPP
#define MLA_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mla.h"

namespace mla {

/// A non-owning view of `size()` contiguous `T` (C++17 has no std::span).
template <class T>
class span {
public:
    constexpr span() noexcept = default;
    constexpr span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
    /// From any contiguous container with data() and size() (std::vector, std::array, ...).
    template <class C,
              class = std::enable_if_t<std::is_convertible_v<
                  std::remove_pointer_t<decltype(std::declval<C &>().data())> (*)[], T (*)[]>>>
    constexpr span(C &c) noexcept : data_(c.data()), size_(c.size()) {}
    /// From a built-in array.
    template <std::size_t N>
    constexpr span(T (&a)[N]) noexcept : data_(a), size_(N) {}

    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }
    constexpr bool empty() const noexcept { return size_ == 0; }
    constexpr T *begin() const noexcept { return data_; }
    constexpr T *end() const noexcept { return data_ + size_; }
    constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }
    /// Elements `[offset, offset + count)` (unchecked, like std::span::subspan).
    constexpr span subspan(std::size_t offset, std::size_t count) const noexcept {
        return span(data_ + offset, count);
    }

private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

/// A failed call: the mla_status code and the library's message.
class Error : public std::runtime_error {
public:
    Error(mla_status status, const std::string &what)
        : std::runtime_error(what), status_(status) {}
    /// The MLA_ERR_* code.
    mla_status status() const noexcept { return status_; }

private:
    mla_status status_;
};

namespace detail {
/// Throws mla::Error for a failed status: "<call>: <status text>[: <detail>]".
inline void check(mla_status s, const char *call, const char *detail = nullptr) {
    if (s == MLA_OK) {
        return;
    }
    std::string what = std::string(call) + ": " + mla_status_str(s);
    if (detail != nullptr && detail[0] != '\0') {
        what += ": ";
        what += detail;
    }
    throw Error(s, what);
}
}  // namespace detail

/// The library version string ("0.1.0").
inline const char *version() noexcept { return mla_version(); }

/// Throws unless the library was built for this header's ABI.
inline void check_abi() {
    if (mla_abi_version() != MLA_ABI_VERSION) {
        throw Error(MLA_ERR_ABI_MISMATCH, "mla: library ABI " + std::to_string(mla_abi_version()) +
                                              ", header ABI " + std::to_string(MLA_ABI_VERSION));
    }
}

/// An mla_config with presets and checked queries; usable wherever mla_config is.
struct Config : mla_config {
    /// Zeroed, with struct_size set (fill it, or start from a preset).
    Config() noexcept : mla_config() { struct_size = sizeof(mla_config); }
    /// From a C config.
    explicit Config(const mla_config &c) noexcept : mla_config(c) {}

    /// The seed tutorial's layer (d 256, H 8, per-head rope key, half layout).
    static Config tutorial() noexcept {
        Config c;
        mla_config_tutorial(&c);
        return c;
    }
    /// DeepSeek-V2-Lite's attention config.
    static Config deepseek_v2_lite() noexcept {
        Config c;
        mla_config_deepseek_v2_lite(&c);
        return c;
    }
    /// DeepSeek-V3's attention config.
    static Config deepseek_v3() noexcept {
        Config c;
        mla_config_deepseek_v3(&c);
        return c;
    }

    /// Layer `layer` of a Hugging Face model from its config.json text (ABI 2;
    /// mla_config_from_hf_json). Throws mla::Error: MLA_ERR_INVALID_CONFIG naming
    /// the key, MLA_ERR_UNSUPPORTED for a layer that is not MLA or a mechanism this
    /// build does not run.
    static Config from_hf_json(span<const char> json, std::uint32_t layer,
                               std::uint32_t max_seq_len, std::uint32_t max_tokens_per_call) {
        Config c;
        detail::check(mla_config_from_hf_json(json.data(), json.size(), layer, max_seq_len,
                                              max_tokens_per_call, &c),
                      "mla_config_from_hf_json", mla_last_error(nullptr));
        return c;
    }

    /// Throws mla::Error naming the offending field when the config is invalid.
    void validate() const {
        char msg[MLA_MESSAGE_MAX];
        msg[0] = '\0';
        detail::check(mla_config_validate(this, msg, sizeof msg), "mla_config_validate", msg);
    }
    /// Memory an engine for this config needs (mla_engine_size).
    std::size_t engine_size() const {
        validate();
        std::size_t n = 0;
        detail::check(mla_engine_size(this, &n), "mla_engine_size", mla_last_error(nullptr));
        return n;
    }
    /// Latent-cache bytes per token (mla_cache_bytes_per_token).
    std::size_t cache_bytes_per_token() const {
        validate();
        std::size_t n = 0;
        detail::check(mla_cache_bytes_per_token(this, &n), "mla_cache_bytes_per_token",
                      mla_last_error(nullptr));
        return n;
    }
};

/// Borrowed weights of one layer (views; the data must outlive every engine using it).
struct Weights : mla_weights {
    /// All tensors absent.
    Weights() noexcept : mla_weights() {}
    /// From C weights.
    explicit Weights(const mla_weights &w) noexcept : mla_weights(w) {}

    /// Binds a safetensors file held in memory (e.g. mapped), zero-copy, by the
    /// Hugging Face names under `prefix`, checked against `cfg`.
    static Weights from_safetensors(span<const unsigned char> bytes, const Config &cfg,
                                    const char *prefix = "") {
        cfg.validate();
        Weights w;
        detail::check(mla_weights_from_safetensors(bytes.data(), bytes.size(), prefix, &cfg, &w),
                      "mla_weights_from_safetensors", mla_last_error(nullptr));
        return w;
    }

    /// Binds layer `layer` of a Hugging Face checkpoint (model.safetensors in
    /// memory) by its family's tensor names, zero-copy (ABI 2;
    /// mla_weights_from_checkpoint). `cfg` is Config::from_hf_json(json, layer, ...).
    static Weights from_checkpoint(span<const unsigned char> bytes, span<const char> json,
                                   std::uint32_t layer, const Config &cfg) {
        Weights w;
        detail::check(mla_weights_from_checkpoint(bytes.data(), bytes.size(), json.data(),
                                                  json.size(), layer, &cfg, &w),
                      "mla_weights_from_checkpoint", mla_last_error(nullptr));
        return w;
    }
};

/// An engine with its own 64-byte aligned arena (cache, RoPE tables, scratch).
/// Movable, not copyable. Not thread-safe: use one engine per thread.
class Engine {
public:
    /// Validates `cfg`, allocates mla_engine_size bytes and initialises the engine.
    Engine(const Config &cfg, const mla_weights &w) : cfg_(cfg) {
        bytes_ = cfg_.engine_size();
        arena_.reset(static_cast<unsigned char *>(
            ::operator new(round_up(bytes_), std::align_val_t{kAlign})));
        detail::check(mla_engine_init(&cfg_, &w, arena_.get(), bytes_, &e_), "mla_engine_init",
                      mla_last_error(nullptr));
    }

    Engine(Engine &&o) noexcept
        : cfg_(o.cfg_), bytes_(o.bytes_), arena_(std::move(o.arena_)), e_(std::exchange(o.e_, nullptr)) {}
    Engine &operator=(Engine &&o) noexcept {
        cfg_ = o.cfg_;
        bytes_ = o.bytes_;
        arena_ = std::move(o.arena_);
        e_ = std::exchange(o.e_, nullptr);
        return *this;
    }
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;
    ~Engine() = default;  // the engine owns nothing but the arena

    /// Appends x.size() / hidden_size tokens and writes as many output rows to `out`.
    /// On error (mla::Error) nothing was appended.
    void forward(span<const float> x, span<float> out) {
        const std::size_t d = cfg_.hidden_size;
        if (x.empty() || x.size() % d != 0 || out.size() != x.size()) {
            throw Error(MLA_ERR_INVALID_ARGUMENT,
                        "mla::Engine::forward: x and out must both hold n_tokens * hidden_size (" +
                            std::to_string(d) + ") floats; got " + std::to_string(x.size()) +
                            " and " + std::to_string(out.size()));
        }
        const std::size_t n = x.size() / d;
        if (n > UINT32_MAX) {
            throw Error(MLA_ERR_INVALID_ARGUMENT, "mla::Engine::forward: too many tokens");
        }
        detail::check(mla_forward(e_, x.data(), static_cast<std::uint32_t>(n), out.data()),
                      "mla_forward", last_error());
    }
    /// As forward(x, out), returning the output.
    std::vector<float> forward(span<const float> x) {
        std::vector<float> out(x.size());
        forward(x, span<float>(out));
        return out;
    }

    /// Tokens cached (the next position).
    std::uint32_t len() const noexcept { return mla_len(e_); }
    /// Cache capacity in tokens.
    std::uint32_t capacity() const noexcept { return cfg_.max_seq_len; }
    /// Rolls back to `n` <= len() tokens.
    void truncate(std::uint32_t n) { detail::check(mla_truncate(e_, n), "mla_truncate", last_error()); }
    /// Empties the cache.
    void reset() noexcept { mla_reset(e_); }
    /// Registers `producer` as the engine whose latent cache this one (a
    /// kv_shared layer) attends over (mla_engine_share_cache). `producer` must
    /// outlive this engine's use and run first on the same tokens; moving either
    /// Engine keeps the registration (the arena does not move).
    void share_cache(const Engine &producer) {
        detail::check(mla_engine_share_cache(e_, producer.e_), "mla_engine_share_cache",
                      last_error());
    }
    /// Registers `producer` as the engine whose top-k selection this one (a
    /// dsa shared layer) reuses (mla_engine_share_topk). Lifetime and order as
    /// share_cache.
    void share_topk(const Engine &producer) {
        detail::check(mla_engine_share_topk(e_, producer.e_), "mla_engine_share_topk",
                      last_error());
    }
    /// The configuration.
    const Config &config() const noexcept { return cfg_; }
    /// Bytes of the arena.
    std::size_t memory_bytes() const noexcept { return bytes_; }
    /// The C handle (nullptr after a move).
    mla_engine *get() const noexcept { return e_; }

private:
    static constexpr std::size_t kAlign = 64;
    static std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
    const char *last_error() const noexcept { return e_ != nullptr ? mla_last_error(e_) : ""; }

    struct ArenaFree {
        void operator()(unsigned char *p) const noexcept {
            ::operator delete(p, std::align_val_t{kAlign});
        }
    };

    Config cfg_;
    std::size_t bytes_ = 0;
    std::unique_ptr<unsigned char, ArenaFree> arena_;
    mla_engine *e_ = nullptr;
};

/// One decode token for each engine at once (mla_forward_batch): row i of `x`
/// ([n][hidden_size]) goes to engines[i], its output to row i of `out`. The
/// engines share one config and the same weights; n <= max_tokens_per_call.
/// On error (mla::Error) no engine changed.
inline void forward_batch(span<Engine *const> engines, span<const float> x, span<float> out) {
    std::vector<mla_engine *> handles;
    handles.reserve(engines.size());
    for (Engine *e : engines) {
        handles.push_back(e != nullptr ? e->get() : nullptr);
    }
    const std::size_t n = handles.size();
    const std::size_t d = n == 0 || engines[0] == nullptr ? 0 : engines[0]->config().hidden_size;
    if (n == 0 || n > UINT32_MAX || x.size() != n * d || out.size() != x.size()) {
        throw Error(MLA_ERR_INVALID_ARGUMENT,
                    "mla::forward_batch: need 1 or more engines and x, out of n * hidden_size "
                    "floats; got n " + std::to_string(n) + ", x " + std::to_string(x.size()) +
                        ", out " + std::to_string(out.size()));
    }
    const mla_status s =
        mla_forward_batch(handles.data(), static_cast<std::uint32_t>(n), x.data(), out.data());
    detail::check(s, "mla_forward_batch",
                  handles[0] != nullptr ? mla_last_error(handles[0]) : mla_last_error(nullptr));
}

}  // namespace mla

#endif  // MLA_HPP

// host_cpp: links the installed shared library (mla::mla_shared) through mla.hpp.
#include <cstdio>

#include <mla.hpp>

int main() {
    try {
        mla::check_abi();
        const auto v3 = mla::Config::deepseek_v3();
        std::printf("host_cpp: mla %s, DeepSeek-V3 engine needs %zu bytes, %zu cache bytes/token\n",
                    mla::version(), v3.engine_size(), v3.cache_bytes_per_token());
        auto bad = mla::Config::tutorial();
        bad.qk_rope_head_dim = 63;
        try {
            bad.validate();
        } catch (const mla::Error &e) {
            std::printf("host_cpp: rejected as expected: %s\n", e.what());
            return e.status() == MLA_ERR_INVALID_CONFIG ? 0 : 1;
        }
        return 1;
    } catch (const mla::Error &e) {
        std::fprintf(stderr, "host_cpp: %s\n", e.what());
        return 1;
    }
}

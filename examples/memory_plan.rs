//! Prints the memory plan region by region: bytes of every region of the
//! tutorial, DeepSeek-V2-Lite and DeepSeek-V3 (and V3 with a short cache)
//! attention layers for a few `max_tokens_per_call` values
//! (`cargo run --example memory_plan`), then the totals and the share that is
//! per-call scratch (everything but the cache and the RoPE tables).

use mla_core::plan::Regions;
use mla_core::Config;

const TOKENS: [u32; 4] = [1, 16, 64, 512];

fn main() {
    let presets = [
        ("tutorial", Config::tutorial()),
        ("DeepSeek-V2-Lite", Config::deepseek_v2_lite()),
        ("DeepSeek-V3", Config::deepseek_v3()),
        (
            "DeepSeek-V3, 1024 tokens",
            Config {
                max_seq_len: 1024,
                ..Config::deepseek_v3()
            },
        ),
    ];
    for (name, preset) in presets {
        println!(
            "{name}: max_seq_len {}, cache dtype {:?}",
            preset.max_seq_len, preset.cache_dtype
        );
        let plans: Vec<_> = TOKENS
            .iter()
            .map(|&t| {
                let mut cfg = preset;
                cfg.max_tokens_per_call = t;
                let dims = cfg.dims().expect("a valid preset");
                let plan = Regions::count(&cfg, &dims).expect("a plan that fits usize");
                let spans: Vec<(&str, usize)> =
                    plan.regions.spans().map(|(n, s)| (n, s.bytes)).collect();
                (plan.bytes, spans)
            })
            .collect();
        print!("  {:<16}", "region");
        for t in TOKENS {
            print!(" {:>12}", format!("T={t}"));
        }
        println!();
        for (i, region) in Regions::NAMES.iter().enumerate() {
            if plans.iter().all(|(_, s)| s[i].1 == 0) {
                continue;
            }
            print!("  {region:<16}");
            for (_, spans) in &plans {
                print!(" {:>12}", spans[i].1);
            }
            println!();
        }
        let fixed = [
            "cache",
            "index_cache",
            "rope_inv_freq",
            "rope_cos",
            "rope_sin",
        ];
        print!("  {:<16}", "total");
        for (bytes, _) in &plans {
            print!(" {bytes:>12}");
        }
        println!();
        print!("  {:<16}", "scratch");
        for (bytes, spans) in &plans {
            let state: usize = spans
                .iter()
                .filter(|(n, _)| fixed.contains(n))
                .map(|(_, b)| b)
                .sum();
            let scratch = bytes - state;
            print!(
                " {:>12}",
                format!("{scratch} {:.0}%", 100.0 * scratch as f64 / *bytes as f64)
            );
        }
        println!("\n");
    }
}

extern crate std;
use super::unique::hash;
use super::*;
use crate::status::{Error, Status};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

fn kind_of(r: JsonResult<()>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind)
}

#[test]
fn grammar_accepts_rfc_8259() {
    for ok in [
        "0",
        "-0",
        "-0.0e+0",
        "1E9",
        "123456789012345678901234567890",
        "\"\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
        "\"\u{e9}\u{1f600}\"",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        " \t\r\n[ 1 , [ ] , { } , \"a\" , { \"k\" : [ null ] } ] \n",
        "{\"a\":{\"b\":{\"c\":[1,2,{\"d\":true}]}}}",
    ] {
        assert_eq!(validate(ok), Ok(()), "{ok:?}");
    }
}

#[test]
fn grammar_rejects_with_kind_and_offset() {
    use ErrorKind::*;
    let cases: &[(&str, ErrorKind, usize)] = &[
        ("", UnexpectedEnd, 0),
        ("   ", UnexpectedEnd, 3),
        ("{", ExpectedString, 1),
        ("[", UnexpectedEnd, 1),
        ("[1", ExpectedCommaOrBracket, 2),
        ("{\"a\"}", ExpectedColon, 4),
        ("{\"a\":}", UnexpectedChar, 5),
        ("{,}", ExpectedString, 1),
        ("{\"a\":1,}", ExpectedString, 7),
        ("[1,]", UnexpectedChar, 3),
        ("[1 2]", ExpectedCommaOrBracket, 3),
        ("{\"a\":1 \"b\":2}", ExpectedCommaOrBrace, 7),
        ("01", Trailing, 1),
        ("1.", BadNumber, 0),
        ("-", BadNumber, 0),
        ("1e", BadNumber, 0),
        ("1e+", BadNumber, 0),
        (".5", UnexpectedChar, 0),
        ("+1", UnexpectedChar, 0),
        ("NaN", UnexpectedChar, 0),
        ("tru", UnexpectedChar, 0),
        ("nul", UnexpectedChar, 0),
        ("\"abc", UnterminatedString, 1),
        ("\"\\q\"", BadEscape, 1),
        ("\"\\u12\"", BadEscape, 1),
        ("\"\\ud800\"", BadEscape, 1),
        ("\"\\udc00\"", BadEscape, 1),
        ("\"\\ud800\\u0041\"", BadEscape, 1),
        ("\"a\tb\"", ControlChar, 2),
        ("{} {}", Trailing, 3),
        ("[] x", Trailing, 3),
        ("'a'", UnexpectedChar, 0),
        ("[1,/*c*/2]", UnexpectedChar, 3),
    ];
    for &(text, kind, at) in cases {
        assert_eq!(validate(text), Err(JsonError { kind, at }), "{text:?}");
    }
}

#[test]
fn nesting_is_limited_without_recursion() {
    // At the limit: fine; one more: TooDeep at the container that passes it.
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(validate(&ok), Ok(()));
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(
        validate(&deep),
        Err(JsonError {
            kind: ErrorKind::TooDeep,
            at: MAX_DEPTH
        })
    );
    // Far deeper than any stack: still just an error.
    let huge = format!("{}{}", "[{\"a\":".repeat(50_000), "1}]".repeat(50_000));
    assert_eq!(kind_of(validate(&huge)), Some(ErrorKind::TooDeep));
    // Other limits: 0 allows scalars only, 64 is the most.
    assert_eq!(Scanner::new("1").with_max_depth(0).finish(), Ok(()));
    assert_eq!(
        kind_of(Scanner::new("[]").with_max_depth(0).finish()),
        Some(ErrorKind::TooDeep)
    );
    let s64 = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(Scanner::new(&s64).with_max_depth(1000).finish(), Ok(()));
    let s65 = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(
        kind_of(Scanner::new(&s65).with_max_depth(1000).finish()),
        Some(ErrorKind::TooDeep)
    );
}

/// A config.json-like text, read through the cursor the way a config parser does.
#[test]
fn cursor_reads_a_config_json() {
    let text = r#"{
        "architectures": ["DeepseekV3ForCausalLM"],
        "hidden_size": 7168, "rms_norm_eps": 1e-06, "rope_theta": 10000,
        "attention_bias": false, "sliding_window": null,
        "rope_scaling": {"beta_fast": 32, "factor": 40, "mscale": 1.0, "type": "yarn"},
        "text_config": {"rope_parameters": {"rope_theta": 5e5, "nested": [[1], {"x": []}]},
                        "layer_types": ["full_attention", "sliding_attention"]},
        "kv_source_layers": [0, 0, 2, -1],
        "unused": {"deep": [[[[{"k": "\u00e9"}]]]]}
    }"#;
    let mut sc = Scanner::new(text);
    let top = sc.object().unwrap();
    let mut seen = Vec::new();
    while let Some(k) = sc.next_key(&top).unwrap() {
        seen.push(k.raw().to_string());
        match k.raw() {
            "hidden_size" => assert_eq!(sc.u64(), Ok(7168)),
            "rms_norm_eps" => assert_eq!(sc.f64(), Ok(1e-6)),
            "rope_theta" => {
                let n = sc.number().unwrap();
                assert!(n.is_integer());
                assert_eq!((n.as_f64(), n.as_u64()), (Some(10000.0), Some(10000)));
            }
            "attention_bias" => assert_eq!(sc.bool(), Ok(false)),
            "sliding_window" => {
                assert_eq!(sc.peek(), Ok(Kind::Null));
                assert_eq!(sc.eat_null(), Ok(true));
            }
            "rope_scaling" => {
                let o = sc.object().unwrap();
                let mut factor = 0.0;
                while let Some(k) = sc.next_key(&o).unwrap() {
                    if k == "factor" {
                        assert_eq!(sc.eat_null(), Ok(false));
                        factor = sc.f32().unwrap();
                    } else if k == "type" {
                        assert_eq!(sc.string().unwrap().as_str(), Some("yarn"));
                    } // beta_fast, mscale: skipped by next_key
                }
                assert_eq!(factor, 40.0);
            }
            "text_config" => {
                let o = sc.object().unwrap();
                while let Some(k) = sc.next_key(&o).unwrap() {
                    if k == "rope_parameters" {
                        // Opened and abandoned half read: the outer next_key finishes it.
                        let inner = sc.object().unwrap();
                        assert!(sc.next_key(&inner).unwrap().unwrap() == "rope_theta");
                        assert_eq!(sc.f64(), Ok(5e5));
                    } else {
                        let a = sc.array().unwrap();
                        let mut types = Vec::new();
                        while sc.next_item(&a).unwrap() {
                            types.push(sc.string().unwrap().raw().to_string());
                        }
                        assert_eq!(types, ["full_attention", "sliding_attention"]);
                    }
                }
            }
            "kv_source_layers" => {
                let a = sc.array().unwrap();
                let mut v = Vec::new();
                while sc.next_item(&a).unwrap() {
                    v.push(sc.i64().unwrap());
                }
                assert_eq!(v, [0, 0, 2, -1]);
            }
            _ => {
                let r = sc.skip().unwrap();
                assert!(text[r].starts_with(['[', '{']));
            }
        }
    }
    assert_eq!(sc.finish(), Ok(()));
    assert_eq!(sc.depth(), 0);
    assert_eq!(seen.len(), 10);
}

#[test]
fn typed_reads_report_the_kind_found() {
    use ErrorKind::*;
    let mut sc = Scanner::new("[\"s\", 1.5, -2, true, {}, 18446744073709551616, 1e400, x]");
    let a = sc.array().unwrap();
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.u64().unwrap_err().kind, ExpectedUnsigned);
    assert_eq!(sc.bool().unwrap_err().kind, ExpectedBool);
    assert_eq!(sc.object().unwrap_err().kind, ExpectedObject);
    assert_eq!(sc.array().unwrap_err().kind, ExpectedArray);
    assert_eq!(sc.null().unwrap_err().kind, ExpectedNull);
    assert_eq!(sc.number().unwrap_err().kind, ExpectedNumber);
    assert_eq!(sc.string().unwrap().raw(), "s");
    // Two reads of one value: the second finds no value.
    assert_eq!(sc.string().unwrap_err().kind, NotAtValue);
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(
        sc.u64().unwrap_err(),
        JsonError {
            kind: ExpectedUnsigned,
            at: 6
        }
    );
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.u64().unwrap_err().kind, ExpectedUnsigned);
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.string().unwrap_err().kind, ExpectedString);
    assert_eq!(sc.bool(), Ok(true));
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.string().unwrap_err().kind, ExpectedString);
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.u64().unwrap_err().kind, IntegerTooLarge);
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.f64().unwrap_err().kind, FloatTooLarge);
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(sc.peek().unwrap_err().kind, UnexpectedChar);
    assert_eq!(sc.u64().unwrap_err().kind, UnexpectedChar);
}

#[test]
fn numbers_convert_exactly() {
    let n = |t: &'static str| {
        let mut sc = Scanner::new(t);
        let v = sc.number().unwrap();
        sc.finish().unwrap();
        v
    };
    assert_eq!(n("18446744073709551615").as_u64(), Some(u64::MAX));
    assert_eq!(n("18446744073709551616").as_u64(), None);
    assert_eq!(n("0").as_u64(), Some(0));
    assert_eq!(n("-0").as_u64(), None);
    assert_eq!(n("1.0").as_u64(), None);
    assert_eq!(n("1e2").as_u64(), None);
    assert_eq!(n("-9223372036854775808").as_i64(), Some(i64::MIN));
    assert_eq!(n("-9223372036854775809").as_i64(), None);
    assert_eq!(n("9223372036854775807").as_i64(), Some(i64::MAX));
    assert_eq!(n("9223372036854775808").as_i64(), None);
    assert_eq!(n("-0").as_i64(), Some(0));
    // Correct rounding, both widths (0.1 + 2^-55 style halfway cases).
    assert_eq!(n("0.1").as_f64(), Some(0.1));
    assert_eq!(n("1e-06").as_f32(), Some(1e-6f32));
    assert_eq!(n("9007199254740993").as_f64(), Some(9007199254740992.0));
    assert_eq!(n("16777217").as_f32(), Some(16777216.0));
    // Straight to f32, not through f64 (double rounding would give 1.0000001).
    assert_eq!(
        n("1.00000005960464477539062500001").as_f32(),
        Some(1.0000001)
    );
    assert_eq!(n("1.000000059604644775390625").as_f32(), Some(1.0));
    assert_eq!(n("1.7976931348623157e308").as_f64(), Some(f64::MAX));
    assert_eq!(n("1.8e308").as_f64(), None);
    assert_eq!(n("3.5e38").as_f32(), None);
    assert_eq!(n("1e-400").as_f64(), Some(0.0));
    assert_eq!(n("-2.5E+3").as_f64(), Some(-2500.0));
    // Past 40 significant digits: refused with its own kind.
    let long = "1.00000000000000000000000000000000000000001";
    assert_eq!(n(long).as_f64(), None);
    let mut sc = Scanner::new(long);
    assert_eq!(sc.f64().unwrap_err().kind, ErrorKind::FloatTooLong);
    let mut sc = Scanner::new("1e400");
    assert_eq!(sc.f32().unwrap_err().kind, ErrorKind::FloatTooLarge);
}

#[test]
fn strings_decode_compare_and_hash_alike() {
    let s = |t: &'static str| {
        let mut sc = Scanner::new(t);
        let v = sc.string().unwrap();
        sc.finish().unwrap();
        v
    };
    let plain = s("\"model.x\u{e9}\"");
    let esc = s("\"model\\u002ex\\u00E9\"");
    assert_eq!(plain.as_str(), Some("model.x\u{e9}"));
    assert_eq!(esc.as_str(), None);
    assert_eq!(esc.raw(), "model\\u002ex\\u00E9");
    assert!(esc.has_escapes() && !plain.has_escapes());
    assert_eq!(esc.chars().collect::<String>(), "model.x\u{e9}");
    assert!(esc == plain && esc == "model.x\u{e9}");
    assert_eq!(esc.decoded_len(), plain.decoded_len());
    assert_eq!(esc.decoded_len(), 9);
    assert_eq!(hash(&esc), hash(&plain));
    assert!(esc.eq_parts(&["mod", "el.", "x\u{e9}"]) && !esc.eq_parts(&["model."]));
    assert!(esc.starts_with("model.") && !esc.starts_with("model.y"));
    assert!(esc.ends_with(".x\u{e9}") && !esc.ends_with("xx\u{e9}"));
    assert!(!esc.ends_with("a very long suffix, longer than the string"));
    let pair = s("\"\\ud83d\\ude00\\n\\\"\"");
    assert_eq!(pair.chars().collect::<String>(), "\u{1f600}\n\"");
    assert_eq!(
        pair.bytes().collect::<Vec<u8>>(),
        "\u{1f600}\n\"".as_bytes()
    );
    // Order: bytes of the decoded strings, like str.
    let words = ["", "a", "a\u{e9}", "ab", "b", "\u{e9}", "\u{1f600}"];
    for a in words {
        for b in words {
            let (ja, jb) = (json_string_of(a), json_string_of(b));
            let (mut sa, mut sb) = (Scanner::new(&ja), Scanner::new(&jb));
            let (xa, xb) = (sa.string().unwrap(), sb.string().unwrap());
            assert_eq!(xa.cmp(&xb), a.cmp(b), "{a:?} {b:?}");
            assert_eq!(xa.cmp(&plain_of(b)), a.cmp(b));
        }
    }
}

/// `s` as a JSON string with every character escaped as `\uXXXX`.
fn json_string_of(s: &str) -> String {
    let mut out = String::from("\"");
    for u in s.encode_utf16() {
        out.push_str(&format!("\\u{u:04x}"));
    }
    out.push('"');
    out
}

fn plain_of(s: &str) -> JsonStr<'_> {
    JsonStr {
        raw: s,
        escaped: false,
    }
}

#[test]
fn utf8_matches_core() {
    for c in [
        '\0',
        'a',
        '\u{7f}',
        '\u{80}',
        '\u{e9}',
        '\u{7ff}',
        '\u{800}',
        '\u{ffff}',
        '\u{10000}',
        '\u{1f600}',
        '\u{10ffff}',
    ] {
        let mut want = [0u8; 4];
        let w = c.encode_utf8(&mut want).len();
        assert_eq!(utf8(c), (want, w), "{c:?}");
    }
}

#[test]
fn skip_returns_the_span_and_settles() {
    let text = " {\"a\": [1, {\"b\": \"]}\"}], \"c\": 2} ";
    let mut sc = Scanner::new(text);
    assert_eq!(sc.skip(), Ok(1..text.len() - 1));
    assert_eq!(sc.finish(), Ok(()));
    // An unread member value and a half-read array are finished by next_key.
    let mut sc = Scanner::new(text);
    let o = sc.object().unwrap();
    assert!(sc.next_key(&o).unwrap().unwrap() == "a");
    let a = sc.array().unwrap();
    assert!(sc.next_item(&a).unwrap());
    assert!(sc.next_key(&o).unwrap().unwrap() == "c");
    assert_eq!(sc.next_key(&o), Ok(None));
    assert_eq!(sc.next_key(&o), Ok(None));
    // The finished array's token reports its end too.
    assert_eq!(sc.next_item(&a), Ok(false));
    assert_eq!(sc.finish(), Ok(()));
    // finish() on a half-read text checks the rest.
    let mut sc = Scanner::new("[1, [2, 3], {\"x\": [}]");
    let a = sc.array().unwrap();
    assert!(sc.next_item(&a).unwrap());
    assert_eq!(kind_of(sc.finish()), Some(ErrorKind::UnexpectedChar));
    // A value inside a larger text.
    let text = "xx [1, 2] yy";
    let mut sc = Scanner::starting_at(text, 2);
    assert_eq!(sc.skip(), Ok(3..9));
    assert_eq!(
        sc.finish(),
        Err(JsonError {
            kind: ErrorKind::Trailing,
            at: 10
        })
    );
}

fn dups(text: &str) -> JsonResult<()> {
    check_unique_keys(text, 0)
}

fn dup_at(key_at: usize) -> JsonResult<()> {
    Err(JsonError {
        kind: ErrorKind::DuplicateKey,
        at: key_at,
    })
}

#[test]
fn duplicate_keys_in_every_order() {
    assert_eq!(dups("{}"), Ok(()));
    assert_eq!(dups("{\"a\":1,\"b\":{\"a\":1,\"a\":2},\"c\":3}"), Ok(()));
    // Adjacent, in an ascending run: found on push.
    assert_eq!(dups("{\"a\":1,\"a\":2}"), dup_at(7));
    // Two runs (merge): "b" in both.
    let t = "{\"a\":1,\"b\":2,\"c\":3,\"b\":4,\"d\":5}";
    assert_eq!(dups(t), dup_at(t.rfind("\"b\"").unwrap()));
    // Equal only after decoding.
    let t = "{\"x\":1,\"y\":2,\"\\u0078\":3}";
    assert_eq!(dups(t), dup_at(13));
    // Descending: every key its own run (blocked check).
    let keys: Vec<String> = (0..40).rev().map(|i| format!("\"k{i:02}\":{i}")).collect();
    let t = format!("{{{}}}", keys.join(","));
    assert_eq!(dups(&t), Ok(()));
    let t = format!("{{{},\"k17\":0}}", keys.join(","));
    assert_eq!(dups(&t), dup_at(t.rfind("\"k17\"").unwrap()));
    let t = format!("{{\"k05\":[],{}}}", keys.join(","));
    assert_eq!(dups(&t), dup_at(t.rfind("\"k05\"").unwrap()));
    // Runs up to the merge limit, then one more (blocked), both with a duplicate
    // between the first and the last run.
    for runs in [MAX_KEY_RUNS, MAX_KEY_RUNS + 1] {
        let mut parts = Vec::new();
        for r in 0..runs {
            for k in 0..3 {
                parts.push(format!("\"r{}_{k}\":0", runs - r));
            }
        }
        let ok = format!("{{{}}}", parts.join(","));
        assert_eq!(dups(&ok), Ok(()), "{runs} runs");
        let bad = format!("{{{},\"r{runs}_1\":0}}", parts.join(","));
        assert_eq!(
            dups(&bad),
            dup_at(bad.rfind(&format!("\"r{runs}_1\"")).unwrap()),
            "{runs} runs"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore)] // tens of thousands of keys
fn duplicate_keys_across_blocks_and_the_limit() {
    // Unsorted keys over several blocks: a duplicate in the last block of a key
    // from the first, and one inside a block.
    let n = 3 * KEY_BLOCK + 5;
    let name = |i: usize| format!("t{}", (i * 7919) % n);
    let keys: Vec<String> = (0..n).map(|i| format!("\"{}\":[]", name(i))).collect();
    let ok = format!("{{{}}}", keys.join(","));
    let mut uk = None;
    let mut sc = Scanner::new(&ok);
    let o = sc.object().unwrap();
    while let Some(k) = sc.next_key(&o).unwrap() {
        uk.get_or_insert_with(|| UniqueKeys::new(&sc, 0))
            .push(&sc, k)
            .unwrap();
    }
    let uk = uk.unwrap();
    assert!(uk.runs() > MAX_KEY_RUNS && uk.len() == n);
    assert_eq!(uk.finish(), Ok(()));
    let bad = format!("{{{},\"{}\":1}}", keys.join(","), name(3));
    assert_eq!(dups(&bad), dup_at(bad.len() - 5 - name(3).len()));
    let mut two = keys.clone();
    two[KEY_BLOCK + 10] = format!("\"{}\":2", name(KEY_BLOCK + 3));
    let bad = format!("{{{}}}", two.join(","));
    let at = bad
        .find(&format!(",\"{}\":2", name(KEY_BLOCK + 3)))
        .unwrap()
        + 1;
    assert_eq!(dups(&bad), dup_at(at));
    // Past the limit: refused rather than slow.
    let n = MAX_UNSORTED_KEYS + 1;
    let keys: Vec<String> = (0..n).rev().map(|i| format!("\"{i:06}\":0")).collect();
    let big = format!("{{{}}}", keys.join(","));
    assert_eq!(
        dups(&big),
        Err(JsonError {
            kind: ErrorKind::TooManyUnsortedKeys,
            at: 0
        })
    );
}

#[test]
fn heapsort_sorts() {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for n in [0usize, 1, 2, 3, 7, 64, 1000] {
        let mut v: Vec<(u64, u64)> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 50, s % 7)
            })
            .collect();
        let mut want = v.clone();
        want.sort();
        heapsort(&mut v);
        assert_eq!(v, want, "n = {n}");
    }
    let mut v = vec![3u64; 10];
    heapsort(&mut v);
    assert_eq!(v, [3; 10]);
}

#[test]
fn errors_convert_with_context() {
    let e = validate("[1,]").unwrap_err();
    let status = e.to_error("config.json");
    assert_eq!(status.status(), Status::InvalidArgument);
    assert_eq!(
        status.message(),
        "config.json: unexpected character at byte 3"
    );
    assert_eq!(
        Error::from(e).message(),
        "JSON: unexpected character at byte 3"
    );
    assert_eq!(key_at("{\"ab\":1}", 1).unwrap().raw(), "ab");
    assert!(key_at("{\"ab\":1}", 0).is_none());
}

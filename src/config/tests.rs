//! Unit tests for the config module's small pieces: sizes, enum spellings, endpoints, `~`
//! expansion and field-name suggestions. Whole-file loading is tested in `tests/it/config.rs`.

use super::env::expand_home;
use super::*;

fn env(pairs: &[(&str, &str)]) -> EnvMap {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn problems_of(text: &str) -> Vec<String> {
    let env = env(&[("HOME", "/home/u")]);
    match GlobalCacheConfig::from_json_str(text, "test.json", &env) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn parse_size_plain_bytes_and_units() {
    assert_eq!(parse_size("0"), Ok(0));
    assert_eq!(parse_size("1048576"), Ok(1_048_576));
    assert_eq!(parse_size("512B"), Ok(512));
    assert_eq!(parse_size("1KB"), Ok(1000));
    assert_eq!(parse_size("500MB"), Ok(500_000_000));
    assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
    assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
    assert_eq!(parse_size("1KiB"), Ok(1024));
    assert_eq!(parse_size("1MiB"), Ok(MIB));
    assert_eq!(parse_size("10GiB"), Ok(10 * GIB));
    assert_eq!(parse_size("1TiB"), Ok(TIB));
    assert_eq!(parse_size("4K"), Ok(4096));
    assert_eq!(parse_size("3M"), Ok(3 * MIB));
    assert_eq!(parse_size("2G"), Ok(2 * GIB));
    assert_eq!(parse_size("1T"), Ok(TIB));
}

#[test]
fn parse_size_is_case_insensitive_and_allows_spaces() {
    assert_eq!(parse_size("10gib"), Ok(10 * GIB));
    assert_eq!(parse_size("10 GiB"), Ok(10 * GIB));
    assert_eq!(parse_size("  500 mb  "), Ok(500_000_000));
    assert_eq!(parse_size("1kb"), Ok(1000));
    assert_eq!(parse_size("1k"), Ok(1024));
    assert_eq!(parse_size("7b"), Ok(7));
}

#[test]
fn parse_size_fractions_round_down() {
    assert_eq!(parse_size("1.5GiB"), Ok(GIB + GIB / 2));
    assert_eq!(parse_size("0.5K"), Ok(512));
    assert_eq!(parse_size("1.5 KB"), Ok(1500));
    assert_eq!(parse_size("0.1KiB"), Ok(102));
    assert_eq!(
        parse_size("1.5"),
        Err("invalid size \"1.5\"; a fraction needs a unit, such as \"1.5GiB\"".to_owned())
    );
}

#[test]
fn parse_size_rejects_bad_input_with_exact_messages() {
    assert_eq!(
        parse_size(""),
        Err("empty size; expected a number of bytes or a size like \"10GiB\"".to_owned())
    );
    assert_eq!(parse_size("   ").unwrap_err(), parse_size("").unwrap_err());
    assert_eq!(
        parse_size("-1"),
        Err("negative size \"-1\"; sizes must be zero or more".to_owned())
    );
    assert_eq!(
        parse_size("-5GiB").unwrap_err(),
        "negative size \"-5GiB\"; sizes must be zero or more"
    );
    assert_eq!(
        parse_size("10XB"),
        Err(
            "unknown size unit \"XB\"; valid units: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, \
             GiB, TiB or K, M, G, T (powers of 1024)"
                .to_owned()
        )
    );
    let not_number =
        "invalid size \"GiB\"; expected a number followed by an optional unit like \"GiB\"";
    assert_eq!(parse_size("GiB"), Err(not_number.to_owned()));
    for bad in [".5G", "1.G", "1.2.3K", "+5", "1e9x"] {
        assert!(parse_size(bad).is_err(), "{bad} should be rejected");
    }
}

#[test]
fn parse_size_overflow() {
    assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    let too_large = "size \"18446744073709551616\" is too large; the maximum is \
                     18446744073709551615 bytes";
    assert_eq!(parse_size("18446744073709551616"), Err(too_large.to_owned()));
    assert!(parse_size("16EiB").unwrap_err().contains("too large"));
    assert!(parse_size("20000000TiB").unwrap_err().contains("too large"));
    assert_eq!(parse_size("15.99EiB").map(|n| n > 15 * (1 << 60)), Ok(true));
}

#[test]
fn format_size_picks_unit_and_one_decimal() {
    assert_eq!(format_size(0), "0 B");
    assert_eq!(format_size(512), "512 B");
    assert_eq!(format_size(1023), "1023 B");
    assert_eq!(format_size(1024), "1.0 KiB");
    assert_eq!(format_size(1536), "1.5 KiB");
    assert_eq!(format_size(MIB - 1), "1.0 MiB");
    assert_eq!(format_size(256 * MIB), "256.0 MiB");
    assert_eq!(format_size(10 * GIB), "10.0 GiB");
    assert_eq!(format_size(3 * TIB), "3.0 TiB");
    assert_eq!(format_size(u64::MAX), "16.0 EiB");
}

#[test]
fn format_then_parse_round_trips_whole_units() {
    for bytes in [0, 7, KIB, 3 * MIB, 10 * GIB, 2 * TIB] {
        assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
    }
}

#[test]
fn cache_mode_spellings() {
    let cases = [
        ("off", CacheMode::Off),
        ("read", CacheMode::Read),
        ("write", CacheMode::Write),
        ("read-write", CacheMode::ReadWrite),
    ];
    for (text, mode) in cases {
        assert_eq!(text.parse::<CacheMode>(), Ok(mode));
        assert_eq!(mode.to_string(), text);
        assert_eq!(serde_json::to_string(&mode).ok(), Some(format!("\"{text}\"")));
    }
    assert_eq!(" READ_WRITE ".parse::<CacheMode>(), Ok(CacheMode::ReadWrite));
    assert_eq!(
        "fast".parse::<CacheMode>().unwrap_err().to_string(),
        "unknown cache mode `fast`; valid values: off, read, write, read-write"
    );
    assert_eq!(CacheMode::default(), CacheMode::ReadWrite);
}

#[test]
fn cache_mode_reads_and_writes() {
    let table = [
        (CacheMode::Off, false, false),
        (CacheMode::Read, true, false),
        (CacheMode::Write, false, true),
        (CacheMode::ReadWrite, true, true),
    ];
    for (mode, reads, writes) in table {
        assert_eq!((mode.reads(), mode.writes()), (reads, writes), "{mode}");
    }
}

#[test]
fn eviction_policy_spellings() {
    for (text, policy) in [
        ("lru", EvictionPolicy::Lru),
        ("lfu", EvictionPolicy::Lfu),
        ("fifo", EvictionPolicy::Fifo),
        ("size-based", EvictionPolicy::SizeBased),
    ] {
        assert_eq!(text.parse::<EvictionPolicy>(), Ok(policy));
        assert_eq!(policy.to_string(), text);
        assert_eq!(serde_json::to_string(&policy).ok(), Some(format!("\"{text}\"")));
    }
    assert_eq!(
        "random".parse::<EvictionPolicy>().unwrap_err().to_string(),
        "unknown eviction policy `random`; valid values: lru, lfu, fifo, size-based"
    );
    assert_eq!(EvictionPolicy::default(), EvictionPolicy::Lru);
}

#[test]
fn endpoints_accept_grpc_and_http_schemes() {
    let parse = |text: &str| validate_endpoint(text);
    let endpoint = |tls, host: &str, port| Ok(RemoteEndpoint { tls, host: host.to_owned(), port });
    assert_eq!(parse("grpc://localhost:9092"), endpoint(false, "localhost", 9092));
    assert_eq!(parse("grpcs://cache.example.com:443"), endpoint(true, "cache.example.com", 443));
    assert_eq!(parse("grpcs://cache.example.com"), endpoint(true, "cache.example.com", 443));
    assert_eq!(parse("http://10.0.0.1:8980"), endpoint(false, "10.0.0.1", 8980));
    assert_eq!(parse("https://cache.example.com/"), endpoint(true, "cache.example.com", 443));
    assert_eq!(parse("grpc://[::1]:50051"), endpoint(false, "[::1]", 50051));
    let uri = parse("grpcs://cache.example.com:8443").map(|e| e.http_uri());
    assert_eq!(uri.as_deref(), Ok("https://cache.example.com:8443"));
}

#[test]
fn endpoints_reject_with_the_bad_value() {
    assert_eq!(
        validate_endpoint("ftp://host:21").unwrap_err(),
        "invalid endpoint \"ftp://host:21\": unsupported scheme `ftp`; expected grpc://host:port \
         or grpcs://host:port"
    );
    assert_eq!(
        validate_endpoint("not a url").unwrap_err(),
        "invalid endpoint \"not a url\": relative URL without a base; expected grpc://host:port \
         or grpcs://host:port"
    );
    let bad_port = validate_endpoint("grpc://host:99999").unwrap_err();
    assert!(
        bad_port.starts_with("invalid endpoint \"grpc://host:99999\": invalid port"),
        "{bad_port}"
    );
    assert_eq!(
        validate_endpoint("grpcs://host:443/main").unwrap_err(),
        "invalid endpoint \"grpcs://host:443/main\": unexpected path, query or fragment; use \
         instance_name for the instance"
    );
    assert!(validate_endpoint("grpcs://user:pw@host:443").unwrap_err().contains("auth_token"));
    assert!(validate_endpoint("grpc://:50051").is_err());
}

#[test]
fn home_expansion() {
    let home = env(&[("HOME", "/home/u")]);
    assert_eq!(expand_home("~/cache", &home), Ok("/home/u/cache".into()));
    assert_eq!(expand_home("~", &home), Ok("/home/u".into()));
    assert_eq!(expand_home("/abs/~/x", &home), Ok("/abs/~/x".into()));
    assert_eq!(expand_home("rel", &home), Ok("rel".into()));
    assert_eq!(
        expand_home("~bob/x", &home),
        Err("cannot expand \"~bob/x\": only `~/` is supported, not `~user`".to_owned())
    );
    assert_eq!(
        expand_home("~/x", &EnvMap::new()),
        Err("cannot expand \"~/x\" because HOME is not set".to_owned())
    );
}

#[test]
fn unknown_fields_suggest_the_nearest_name_at_every_level() {
    let text = r#"{
        "max_sise": 1,
        "defaultMode": "read",
        "storage": {"inline_treshold": 10},
        "remote_cache": {"endpoint": "grpcs://h:1", "timeout_secs": 5, "tls": {"ca_certs": "x"}},
        "zzzzzzzzzzzz": true
    }"#;
    let problems = problems_of(text);
    let expected = [
        "defaultMode: unknown field `defaultMode`; did you mean `default_mode`?",
        "max_sise: unknown field `max_sise`; did you mean `max_size`?",
        "remote_cache.tls.ca_certs: unknown field `ca_certs`; did you mean `ca_cert`?",
        "remote_cache.timeout_secs: unknown field `timeout_secs`; did you mean `timeout_seconds`?",
        "storage.inline_treshold: unknown field `inline_treshold`; did you mean `inline_threshold`?",
    ];
    for line in expected {
        assert!(problems.iter().any(|p| p == line), "missing {line:?} in {problems:#?}");
    }
    let far = problems.iter().find(|p| p.starts_with("zzzzzzzzzzzz:"));
    assert!(far.is_some_and(|p| p.contains("valid fields: enabled, default_mode")), "{far:?}");
    assert_eq!(problems.len(), 6, "{problems:#?}");
}

#[test]
fn wrong_types_and_sizes_in_the_file() {
    let text = r#"{"enabled": "yes", "max_size": -3, "stats_retention_days": 5000000000,
        "storage": {"memory_capacity": "12 parsecs", "inline_threshold": "1KiB"},
        "remote_cache": {"endpoint": "grpc://h:1", "max_concurrent": 1.5}, "cache_dir": "~x"}"#;
    assert_eq!(
        problems_of(text),
        [
            "enabled: expected a boolean, found string \"yes\"",
            "cache_dir: cannot expand \"~x\": only `~/` is supported, not `~user`",
            "max_size: expected a number of bytes or a size like \"10GiB\", found number -3",
            "stats_retention_days: number 5000000000 is too large",
            "remote_cache.max_concurrent: expected a non-negative integer, found number 1.5",
            "storage.memory_capacity: unknown size unit \"parsecs\"; valid units: B, KB, MB, GB, TB \
             (powers of 1000), KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024)",
        ]
    );
}

#[test]
fn null_fields_mean_default_and_remote_can_be_null() {
    let home = env(&[("HOME", "/home/u")]);
    let text = r#"{"max_size": null, "remote_cache": null, "cache_dir": "~/c"}"#;
    let config = GlobalCacheConfig::from_json_str(text, "t", &home).expect("valid");
    assert_eq!(config.max_size, DEFAULT_MAX_SIZE);
    assert_eq!(config.remote_cache, None);
    assert_eq!(config.cache_dir, PathBuf::from("/home/u/c"));
}

#[test]
fn env_var_names_lists_every_variable_once() {
    let names = env_var_names();
    assert_eq!(names.len(), 9);
    for name in names {
        assert!(name.starts_with("CUENV_"), "{name}");
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
    }
}

#[test]
fn invalid_error_display_has_header_then_one_problem_per_line() {
    let error = ConfigError::Invalid {
        source_name: "/etc/cache.json".to_owned(),
        problems: vec![
            Problem { field: "max_size".to_owned(), message: "must be greater than 0".to_owned() },
            Problem { field: String::new(), message: "whole document".to_owned() },
        ],
    };
    assert_eq!(
        error.to_string(),
        "invalid cache configuration in /etc/cache.json:\n  max_size: must be greater than 0\n  \
         whole document"
    );
}

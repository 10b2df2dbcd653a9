//! Config loading tests: defaults, where the file is found, environment overrides, validation
//! and how problems are reported. Every test builds its own `EnvMap`, so none touches the real
//! process environment.

use std::path::{Path, PathBuf};

use cuenv::Problem;
use cuenv::config::{
    CacheFeatureFlags, CacheMode, ConfigError, EnvMap, EvictionPolicy, GIB, GlobalCacheConfig, MIB,
    RemoteCacheConfig, StorageConfig, TlsConfig, default_config_path,
};
use tempfile::TempDir;

fn env(pairs: &[(&str, &str)]) -> EnvMap {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A temporary HOME with nothing in it, and an env pointing at it.
fn empty_home() -> (TempDir, EnvMap) {
    let home = tempfile::tempdir().expect("tempdir");
    let env = env(&[("HOME", home.path().to_str().expect("utf-8 temp path"))]);
    (home, env)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create dirs");
    }
    std::fs::write(&path, text).expect("write config");
    path
}

/// Problems of a failed load, rendered as `field: message`.
fn problem_lines(result: Result<GlobalCacheConfig, ConfigError>) -> Vec<String> {
    match result {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(error) => error.problems().iter().map(ToString::to_string).collect(),
    }
}

fn from_json(text: &str) -> Result<GlobalCacheConfig, ConfigError> {
    GlobalCacheConfig::from_json_str(text, "cache.json", &env(&[("HOME", "/home/u")]))
}

#[test]
fn defaults_are_exactly_as_documented() {
    let config = GlobalCacheConfig::defaults_from(&env(&[("HOME", "/home/u")]));
    assert!(config.enabled);
    assert_eq!(config.default_mode, CacheMode::ReadWrite);
    assert_eq!(config.cache_dir, PathBuf::from("/home/u/.cache/cuenv"));
    assert_eq!(config.max_size, 10 * 1024 * 1024 * 1024);
    assert_eq!(config.env_include, ["PATH", "HOME", "USER", "SHELL", "LANG", "CUENV_*"]);
    assert_eq!(config.env_exclude, ["RANDOM", "TEMP", "TMP", "TERM", "SSH_*"]);
    assert_eq!(config.eviction_policy, EvictionPolicy::Lru);
    assert_eq!(config.stats_retention_days, 30);
    assert!(!config.cache_failures);
    assert_eq!(config.remote_cache, None);
    assert_eq!(
        config.storage,
        StorageConfig { inline_threshold: 4096, memory_capacity: 256 * 1024 * 1024, fsync: true }
    );
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn remote_defaults_are_exactly_as_documented() {
    let remote = RemoteCacheConfig::new("grpcs://cache.example.com:443");
    assert_eq!(remote.endpoint, "grpcs://cache.example.com:443");
    assert_eq!(remote.instance_name, "");
    assert_eq!(remote.auth_token, None);
    assert_eq!(remote.timeout_seconds, 30);
    assert_eq!(remote.max_concurrent, 64);
    assert!(remote.upload_enabled);
    assert!(remote.download_enabled);
    assert_eq!(remote.tls, None);
}

#[test]
fn cache_dir_prefers_xdg_then_home_then_a_relative_fallback() {
    let both = env(&[("XDG_CACHE_HOME", "/xdg/cache"), ("HOME", "/home/u")]);
    assert_eq!(
        GlobalCacheConfig::defaults_from(&both).cache_dir,
        PathBuf::from("/xdg/cache/cuenv")
    );
    let home = env(&[("HOME", "/home/u")]);
    assert_eq!(
        GlobalCacheConfig::defaults_from(&home).cache_dir,
        PathBuf::from("/home/u/.cache/cuenv")
    );
    let empty_xdg = env(&[("XDG_CACHE_HOME", ""), ("HOME", "/home/u")]);
    assert_eq!(
        GlobalCacheConfig::defaults_from(&empty_xdg).cache_dir,
        PathBuf::from("/home/u/.cache/cuenv")
    );
    // The XDG spec says relative values are invalid and must be ignored.
    let relative_xdg = env(&[("XDG_CACHE_HOME", "rel/cache"), ("HOME", "/home/u")]);
    assert_eq!(
        GlobalCacheConfig::defaults_from(&relative_xdg).cache_dir,
        PathBuf::from("/home/u/.cache/cuenv")
    );
    assert_eq!(
        GlobalCacheConfig::defaults_from(&EnvMap::new()).cache_dir,
        PathBuf::from(".cuenv-cache")
    );
}

#[test]
fn default_config_path_prefers_xdg_config_home() {
    let both = env(&[("XDG_CONFIG_HOME", "/xdg/config"), ("HOME", "/home/u")]);
    assert_eq!(default_config_path(&both), Some(PathBuf::from("/xdg/config/cuenv/cache.json")));
    let home = env(&[("HOME", "/home/u")]);
    assert_eq!(default_config_path(&home), Some(PathBuf::from("/home/u/.config/cuenv/cache.json")));
    assert_eq!(default_config_path(&EnvMap::new()), None);
}

#[test]
fn missing_default_file_means_defaults() {
    let (_home, env) = empty_home();
    let loaded = GlobalCacheConfig::load(None, &env).expect("defaults");
    assert_eq!(loaded, GlobalCacheConfig::defaults_from(&env));
    assert_eq!(
        GlobalCacheConfig::load(None, &EnvMap::new()).ok(),
        Some(GlobalCacheConfig::defaults_from(&EnvMap::new()))
    );
}

#[test]
fn default_file_under_home_and_xdg_is_read() {
    let (home, mut env) = empty_home();
    write(home.path(), ".config/cuenv/cache.json", r#"{"max_size": "1GiB"}"#);
    assert_eq!(GlobalCacheConfig::load(None, &env).map(|c| c.max_size).ok(), Some(GIB));

    let xdg = tempfile::tempdir().expect("tempdir");
    write(xdg.path(), "cuenv/cache.json", r#"{"max_size": "2GiB"}"#);
    env.insert("XDG_CONFIG_HOME".to_owned(), xdg.path().display().to_string());
    assert_eq!(GlobalCacheConfig::load(None, &env).map(|c| c.max_size).ok(), Some(2 * GIB));
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let (home, env) = empty_home();
    let path = home.path().join("nope.json");
    let error = GlobalCacheConfig::load(Some(&path), &env).expect_err("missing file");
    assert!(
        matches!(&error, ConfigError::NotFound { path: p, named_by: "--cache-config" } if *p == path)
    );
    assert_eq!(
        error.to_string(),
        format!("cache config {} (named by --cache-config) does not exist", path.display())
    );
}

#[test]
fn cuenv_cache_config_names_the_file() {
    let (home, mut env) = empty_home();
    let path = write(home.path(), "custom.json", r#"{"default_mode": "read"}"#);
    env.insert("CUENV_CACHE_CONFIG".to_owned(), path.display().to_string());
    assert_eq!(
        GlobalCacheConfig::load(None, &env).map(|c| c.default_mode).ok(),
        Some(CacheMode::Read)
    );

    // The flag beats the variable.
    let flag = write(home.path(), "flag.json", r#"{"default_mode": "write"}"#);
    let loaded = GlobalCacheConfig::load(Some(&flag), &env).map(|c| c.default_mode);
    assert_eq!(loaded.ok(), Some(CacheMode::Write));

    let missing = home.path().join("missing.json");
    env.insert("CUENV_CACHE_CONFIG".to_owned(), missing.display().to_string());
    let error = GlobalCacheConfig::load(None, &env).expect_err("missing file");
    assert_eq!(
        error.to_string(),
        format!("cache config {} (named by CUENV_CACHE_CONFIG) does not exist", missing.display())
    );
}

#[test]
fn unreadable_file_is_an_io_error() {
    let (home, env) = empty_home();
    let error = GlobalCacheConfig::load(Some(home.path()), &env).expect_err("a directory");
    assert!(matches!(&error, ConfigError::Io { path, .. } if path == home.path()), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot read cache config {}: ", home.path().display()))
    );
}

#[test]
fn a_complete_file_sets_every_field() {
    let text = r#"{
        "enabled": false, "default_mode": "read", "cache_dir": "~/my-cache", "max_size": 1048576,
        "env_include": ["PATH", "CI_*"], "env_exclude": ["CI_JOB_ID"], "eviction_policy": "size-based",
        "stats_retention_days": 7, "cache_failures": true,
        "storage": {"inline_threshold": "8KiB", "memory_capacity": "64MiB", "fsync": false},
        "remote_cache": {"endpoint": "grpcs://cache.example.com:8443", "instance_name": "main",
            "auth_token": "s3cret", "timeout_seconds": 5, "max_concurrent": 4,
            "upload_enabled": false, "download_enabled": true,
            "tls": {"ca_cert": "~/ca.pem", "domain_name": "cache.internal"}}
    }"#;
    let config = from_json(text).expect("valid");
    let mut expected = GlobalCacheConfig::defaults_from(&env(&[("HOME", "/home/u")]));
    expected.enabled = false;
    expected.default_mode = CacheMode::Read;
    expected.cache_dir = PathBuf::from("/home/u/my-cache");
    expected.max_size = 1_048_576;
    expected.env_include = vec!["PATH".to_owned(), "CI_*".to_owned()];
    expected.env_exclude = vec!["CI_JOB_ID".to_owned()];
    expected.eviction_policy = EvictionPolicy::SizeBased;
    expected.stats_retention_days = 7;
    expected.cache_failures = true;
    expected.storage =
        StorageConfig { inline_threshold: 8192, memory_capacity: 64 * MIB, fsync: false };
    expected.remote_cache = Some(RemoteCacheConfig {
        instance_name: "main".to_owned(),
        auth_token: Some("s3cret".to_owned()),
        timeout_seconds: 5,
        max_concurrent: 4,
        upload_enabled: false,
        tls: Some(TlsConfig {
            ca_cert: Some(PathBuf::from("/home/u/ca.pem")),
            domain_name: Some("cache.internal".to_owned()),
        }),
        ..RemoteCacheConfig::new("grpcs://cache.example.com:8443")
    });
    assert_eq!(config, expected);
}

#[test]
fn effective_config_prints_as_json_with_the_token_redacted() {
    let text = r#"{"remote_cache": {"endpoint": "grpc://h:1", "auth_token": "s3cret"}}"#;
    let config = from_json(text).expect("valid");
    let json = serde_json::to_value(&config).expect("serialize");
    assert_eq!(json["default_mode"], "read-write");
    assert_eq!(json["eviction_policy"], "lru");
    assert_eq!(json["max_size"], 10 * GIB);
    assert_eq!(json["storage"]["inline_threshold"], 4096);
    assert_eq!(json["remote_cache"]["auth_token"], "<redacted>");
    assert!(!serde_json::to_string(&config).expect("serialize").contains("s3cret"));
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn env_overrides_apply_on_top_of_the_file() {
    let (home, mut env) = empty_home();
    let path = write(
        home.path(),
        "cache.json",
        r#"{"remote_cache": {"endpoint": "grpc://old:1", "instance_name": "main"}}"#,
    );
    env.extend(
        [
            ("CUENV_CACHE_DIR", "~/override"),
            ("CUENV_CACHE_MODE", "write"),
            ("CUENV_CACHE_MAX_SIZE", "500MB"),
            ("CUENV_REMOTE_CACHE_URL", "grpcs://new.example.com:443"),
            ("CUENV_REMOTE_CACHE_TOKEN", "tok"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let config = GlobalCacheConfig::load(Some(&path), &env).expect("valid");
    assert_eq!(config.cache_dir, home.path().join("override"));
    assert_eq!(config.default_mode, CacheMode::Write);
    assert_eq!(config.max_size, 500_000_000);
    let remote = config.remote_cache.expect("remote");
    assert_eq!(remote.endpoint, "grpcs://new.example.com:443");
    assert_eq!(remote.instance_name, "main", "other remote settings are kept");
    assert_eq!(remote.auth_token.as_deref(), Some("tok"));
}

#[test]
fn max_size_override_accepts_every_size_format() {
    for (text, bytes) in [
        ("10GiB", 10 * GIB),
        ("500MB", 500_000_000),
        ("1048576", 1_048_576),
        ("1.5G", GIB + GIB / 2),
        ("2 kb", 2000),
    ] {
        let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
        let problems = config.apply_env_overrides(&env(&[("CUENV_CACHE_MAX_SIZE", text)]));
        assert_eq!((problems, config.max_size), (Vec::new(), bytes), "{text}");
    }
}

#[test]
fn remote_url_creates_a_default_remote_and_token_needs_a_remote() {
    let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
    let vars = env(&[
        ("CUENV_REMOTE_CACHE_URL", "grpc://localhost:9092"),
        ("CUENV_REMOTE_CACHE_TOKEN", "t"),
    ]);
    assert_eq!(config.apply_env_overrides(&vars), Vec::new());
    let expected = RemoteCacheConfig {
        auth_token: Some("t".to_owned()),
        ..RemoteCacheConfig::new("grpc://localhost:9092")
    };
    assert_eq!(config.remote_cache, Some(expected));

    let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
    let problems = config.apply_env_overrides(&env(&[("CUENV_REMOTE_CACHE_TOKEN", "t")]));
    assert_eq!(
        problems,
        [Problem {
            field: "CUENV_REMOTE_CACHE_TOKEN".to_owned(),
            message: "a token is set but no remote cache is configured; set remote_cache.endpoint \
                      in the config file or CUENV_REMOTE_CACHE_URL"
                .to_owned(),
        }]
    );
    assert_eq!(config.remote_cache, None);
}

#[test]
fn bad_env_values_are_reported_by_variable_name_and_left_unapplied() {
    let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
    let vars = env(&[
        ("CUENV_CACHE_MODE", "sometimes"),
        ("CUENV_CACHE_MAX_SIZE", "10 parsecs"),
        ("CUENV_REMOTE_CACHE_URL", "localhost:9092"),
        ("CUENV_CACHE_DIR", "~/x"),
    ]);
    let problems: Vec<String> =
        config.apply_env_overrides(&vars).iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "CUENV_CACHE_DIR: cannot expand \"~/x\" because HOME is not set",
            "CUENV_CACHE_MODE: unknown cache mode `sometimes`; valid values: off, read, write, read-write",
            "CUENV_CACHE_MAX_SIZE: unknown size unit \"parsecs\"; valid units: B, KB, MB, GB, TB \
             (powers of 1000), KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024)",
            "CUENV_REMOTE_CACHE_URL: invalid endpoint \"localhost:9092\": unsupported scheme \
             `localhost`; expected grpc://host:port or grpcs://host:port",
        ]
    );
    assert_eq!(config, GlobalCacheConfig::defaults_from(&EnvMap::new()));
}

#[test]
fn empty_env_values_count_as_unset() {
    let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
    let vars = env(&[
        ("CUENV_CACHE_DIR", ""),
        ("CUENV_CACHE_MODE", ""),
        ("CUENV_CACHE_MAX_SIZE", ""),
        ("CUENV_REMOTE_CACHE_URL", ""),
        ("CUENV_REMOTE_CACHE_TOKEN", ""),
    ]);
    assert_eq!(config.apply_env_overrides(&vars), Vec::new());
    assert_eq!(config, GlobalCacheConfig::defaults_from(&EnvMap::new()));
}

#[test]
fn a_file_with_many_problems_reports_all_of_them() {
    let (home, mut env) = empty_home();
    let text = r#"{
        "max_sise": 5,
        "default_mode": "sometimes",
        "max_size": 0,
        "remote_cache": {"endpoint": "grpc//cache:9092", "timeout_seconds": 0, "max_concurrent": 0}
    }"#;
    let path = write(home.path(), "cache.json", text);
    env.insert("CUENV_CACHE_MAX_SIZE".to_owned(), "-1".to_owned());
    let error = GlobalCacheConfig::load(Some(&path), &env).expect_err("invalid");
    let expected = [
        "default_mode: unknown cache mode `sometimes`; valid values: off, read, write, read-write",
        "max_sise: unknown field `max_sise`; did you mean `max_size`?",
        "CUENV_CACHE_MAX_SIZE: negative size \"-1\"; sizes must be zero or more",
        "max_size: must be greater than 0, found 0",
        "remote_cache.endpoint: invalid endpoint \"grpc//cache:9092\": relative URL without a \
         base; expected grpc://host:port or grpcs://host:port",
        "remote_cache.timeout_seconds: must be greater than 0, found 0",
        "remote_cache.max_concurrent: must be greater than 0, found 0",
    ];
    assert_eq!(
        error.to_string(),
        format!("invalid cache configuration in {}:\n  {}", path.display(), expected.join("\n  "))
    );
}

#[test]
fn validation_checks_every_rule() {
    let mut config = GlobalCacheConfig::defaults_from(&EnvMap::new());
    config.cache_dir = PathBuf::new();
    config.stats_retention_days = 0;
    config.storage.inline_threshold = 64 * MIB + 1;
    config.storage.memory_capacity = 0;
    config.env_include.push(String::new());
    config.env_exclude.insert(0, "  ".to_owned());
    config.remote_cache = Some(RemoteCacheConfig {
        auth_token: Some(String::new()),
        tls: Some(TlsConfig::default()),
        ..RemoteCacheConfig::new("grpc://cache:9092")
    });
    let problems: Vec<String> =
        config.validate().expect_err("invalid").iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "cache_dir: must not be empty",
            "stats_retention_days: must be at least 1 day, found 0",
            "storage.inline_threshold: must be at most 67108864 bytes (64 MiB), found 67108865 (64.0 MiB)",
            "storage.memory_capacity: must be greater than 0, found 0",
            "env_include[6]: empty pattern \"\"",
            "env_exclude[0]: empty pattern \"  \"",
            "remote_cache.auth_token: must not be empty when given",
            "remote_cache.tls: TLS settings need a grpcs:// or https:// endpoint, found \"grpc://cache:9092\"",
        ]
    );
}

#[test]
fn remote_without_endpoint_is_reported_unless_the_env_supplies_it() {
    let text = r#"{"remote_cache": {"instance_name": "main"}}"#;
    assert_eq!(
        problem_lines(from_json(text)),
        [
            "remote_cache.endpoint: required when remote_cache is set, e.g. \"grpcs://cache.example.com:443\""
        ]
    );
    let (home, mut env) = empty_home();
    let path = write(home.path(), "cache.json", text);
    env.insert("CUENV_REMOTE_CACHE_URL".to_owned(), "grpcs://cache.example.com".to_owned());
    let remote =
        GlobalCacheConfig::load(Some(&path), &env).expect("valid").remote_cache.expect("remote");
    assert_eq!(
        (remote.endpoint.as_str(), remote.instance_name.as_str()),
        ("grpcs://cache.example.com", "main")
    );
}

#[test]
fn json_syntax_error_reports_line_and_column() {
    let text = "{\n  \"enabled\": true,\n  \"max_size\": \n}";
    let error =
        GlobalCacheConfig::from_json_str(text, "bad.json", &EnvMap::new()).expect_err("syntax");
    assert_eq!(
        error.to_string(),
        "invalid cache configuration in bad.json:\n  invalid JSON at line 4, column 1: expected value"
    );
    assert_eq!(problem_lines(from_json("[1, 2]")), ["expected a table/object, found a list"]);
    // A byte order mark, as some Windows editors write, is no syntax error.
    let marked = "\u{feff}{\"max_size\": \"1GiB\"}";
    let config = GlobalCacheConfig::from_json_str(marked, "bom.json", &EnvMap::new());
    assert_eq!(config.expect("BOM").max_size, 1 << 30);
}

#[test]
fn feature_flags_default_to_on_and_parse_booleans() {
    let all_on = CacheFeatureFlags {
        enhanced_cache_enabled: true,
        remote_cache_enabled: true,
        persistent_storage_enabled: true,
    };
    assert_eq!(CacheFeatureFlags::from_env(&EnvMap::new()).ok(), Some(all_on));
    assert_eq!(CacheFeatureFlags::default(), all_on);
    let vars = env(&[
        ("CUENV_ENHANCED_CACHE", " FALSE "),
        ("CUENV_REMOTE_CACHE", "0"),
        ("CUENV_PERSISTENT_CACHE", ""),
    ]);
    let flags = CacheFeatureFlags::from_env(&vars).expect("valid");
    assert_eq!(
        flags,
        CacheFeatureFlags {
            enhanced_cache_enabled: false,
            remote_cache_enabled: false,
            persistent_storage_enabled: true
        }
    );
    let vars = env(&[
        ("CUENV_ENHANCED_CACHE", "True"),
        ("CUENV_REMOTE_CACHE", "1"),
        ("CUENV_PERSISTENT_CACHE", "false"),
    ]);
    let flags = CacheFeatureFlags::from_env(&vars).expect("valid");
    assert_eq!(
        (
            flags.enhanced_cache_enabled,
            flags.remote_cache_enabled,
            flags.persistent_storage_enabled
        ),
        (true, true, false)
    );
}

#[test]
fn feature_flags_report_every_bad_value() {
    let vars = env(&[
        ("CUENV_ENHANCED_CACHE", "yes"),
        ("CUENV_REMOTE_CACHE", "1"),
        ("CUENV_PERSISTENT_CACHE", "2"),
    ]);
    let error = CacheFeatureFlags::from_env(&vars).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "invalid cache configuration in environment:\n  CUENV_ENHANCED_CACHE: expected 1, true, 0 or \
         false, found \"yes\"\n  CUENV_PERSISTENT_CACHE: expected 1, true, 0 or false, found \"2\""
    );
}

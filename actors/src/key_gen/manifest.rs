//! The key manifest: every component of an action key, kept so a miss can be explained later.
//!
//! The action digest is blake3 over a domain tag and the postcard encoding of the manifest.
//! postcard's wire format is fixed for 1.x and the manifest holds only sorted maps and sorted
//! lists, so equal manifests always encode to equal bytes. Changing the struct changes
//! [`KEY_FORMAT_VERSION`], which is itself part of the encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Bumped whenever the manifest's meaning or layout changes, or what a result records, so old
/// keys can never collide with new ones (2: results record output files' modes).
pub const KEY_FORMAT_VERSION: u32 = 2;

const DIGEST_DOMAIN: &[u8] = b"cuenv action key\0";

/// Every component that goes into an action digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyManifest {
    /// [`KEY_FORMAT_VERSION`] at the time the key was made.
    pub format: u32,
    /// The task's name.
    pub task: String,
    /// The command or script text.
    pub command: String,
    /// Extra arguments appended to the command.
    pub args: Vec<String>,
    /// The working directory relative to the project root (`""` for the root), `/`-separated.
    pub working_dir: String,
    /// Filtered environment: name → blake3 of the value. Values are hashed so that a manifest
    /// (stored on disk, sent to a remote) never carries a secret in clear.
    pub env: BTreeMap<String, Digest>,
    /// The input part: file hashes, or the user's `cacheKey`.
    pub inputs: InputPart,
    /// Declared output globs, as written.
    pub outputs: Vec<String>,
    /// The task's `customKeyComponents`.
    pub custom: BTreeMap<String, String>,
    /// Digests of the task's dependencies, by task name.
    pub dependencies: BTreeMap<String, Digest>,
    /// The cuenv version that made the key.
    pub cuenv_version: String,
    /// `os-arch` of the machine, e.g. `linux-x86_64`.
    pub platform: String,
}

/// What stands for a task's inputs in its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputPart {
    /// The hashed input files, sorted by path.
    Files(Vec<InputFile>),
    /// A user-given key that replaces the input files.
    CacheKey(String),
}

/// One input file as it entered the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Path relative to the project root, `/`-separated.
    pub path: String,
    /// Regular, executable, or a symlink.
    pub kind: InputKind,
    /// blake3 of the content (of the link target path for a symlink).
    pub hash: Digest,
    /// Size in bytes (of the target path for a symlink).
    pub size: u64,
}

/// The part of a file's mode that is part of its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A regular file without any execute bit.
    File,
    /// A regular file with an execute bit.
    Executable,
    /// A symbolic link, hashed as its target path and never followed.
    Symlink,
}

impl KeyManifest {
    /// The manifest of an action that is only a command: no args, inputs, outputs, env or
    /// dependencies, made by this build on this platform. The key of synthetic entries (the
    /// legacy API's string keys, `cache test`'s probe) and a starting point for tests.
    pub fn for_command(task: &str, command: &str) -> Self {
        KeyManifest {
            format: KEY_FORMAT_VERSION,
            task: task.to_owned(),
            command: command.to_owned(),
            args: Vec::new(),
            working_dir: String::new(),
            env: BTreeMap::new(),
            inputs: InputPart::Files(Vec::new()),
            outputs: Vec::new(),
            custom: BTreeMap::new(),
            dependencies: BTreeMap::new(),
            cuenv_version: env!("CARGO_PKG_VERSION").to_owned(),
            platform: platform(),
        }
    }

    /// The action digest of this manifest.
    pub fn digest(&self) -> Digest {
        // The encoding streams into the hasher (no buffer the size of the manifest). Encoding
        // plain data (strings, integers, maps, vectors) cannot fail.
        let mut streamed = HashingFlavor { hasher: blake3::Hasher::new(), buffer: Vec::new() };
        streamed.buffer.reserve_exact(HASH_BATCH);
        streamed.buffer.extend_from_slice(DIGEST_DOMAIN);
        match postcard::serialize_with_flavor(self, streamed) {
            Ok(hasher) => hasher.finalize().into(),
            Err(_) => Digest::of(DIGEST_DOMAIN),
        }
    }

    /// The input files, or an empty slice when a `cacheKey` replaced them.
    pub fn input_files(&self) -> &[InputFile] {
        match &self.inputs {
            InputPart::Files(files) => files,
            InputPart::CacheKey(_) => &[],
        }
    }
}

/// Bytes handed to the hasher at a time: sixteen whole blake3 chunks, which it compresses side
/// by side (SIMD), where the encoding's many small writes alone would be compressed one 64-byte
/// block after another.
const HASH_BATCH: usize = 16 * 1024;

/// A postcard output that feeds blake3 through a [`HASH_BATCH`] buffer, always in whole
/// batches until the last, so every update but the last is chunk-aligned.
struct HashingFlavor {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
}

impl postcard::ser_flavors::Flavor for HashingFlavor {
    type Output = blake3::Hasher;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buffer.push(byte);
        if self.buffer.len() == HASH_BATCH {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
        Ok(())
    }

    fn try_extend(&mut self, mut bytes: &[u8]) -> postcard::Result<()> {
        while !bytes.is_empty() {
            let room = HASH_BATCH - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            if self.buffer.len() == HASH_BATCH {
                self.hasher.update(&self.buffer);
                self.buffer.clear();
            }
            bytes = later;
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<blake3::Hasher> {
        self.hasher.update(&self.buffer);
        Ok(self.hasher)
    }
}

/// `os-arch` of this build.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streamed_digest_is_the_digest_of_the_whole_encoding() {
        let mut manifest = KeyManifest::for_command("build", "make all");
        // Paths of every length, and enough of them to fill several batches, so writes
        // straddle a batch's edge.
        let files = (0..2000)
            .map(|index| InputFile {
                path: "p".repeat(index % 300),
                kind: InputKind::File,
                hash: Digest::of(&index.to_le_bytes()),
                size: index as u64,
            })
            .collect();
        manifest.inputs = InputPart::Files(files);
        manifest.command = "c".repeat(1000);
        for manifest in [KeyManifest::for_command("t", ""), manifest] {
            let mut whole = DIGEST_DOMAIN.to_vec();
            whole.extend(postcard::to_allocvec(&manifest).unwrap());
            assert_eq!(manifest.digest(), Digest::of(&whole));
        }
    }
}

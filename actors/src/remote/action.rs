//! The remote key: a REAPI `Action` built from a key manifest.
//!
//! A remote cache indexes results by the digest of an `Action`, which names a `Command` and an
//! input root `Directory` tree. cuenv builds all three from the manifest alone, so a machine
//! that has only computed a key (no result yet) can look it up:
//!
//! - `Command`: arguments `["sh", "-c", command, args…]`; the filtered environment sorted by
//!   name, each value being the blake3 hex of the real value (no secret reaches the server);
//!   `output_paths` = the declared output globs, sorted; `working_directory` = the manifest's.
//! - Input root: one `FileNode` per input file with its `is_executable` bit, one `SymlinkNode`
//!   per input symlink. The local store keeps only the inputs' blake3 hashes, not their
//!   content, so a file's digest is the real content digest when BLAKE3 was negotiated and,
//!   under SHA-256, the SHA-256 of the 32 blake3 bytes with the file's real size; a symlink's
//!   target is the blake3 hex of its target path. **The input root is a key, not uploadable
//!   content**: the `Directory` protos are uploaded, the files they name are not.
//! - `Action.platform` carries `cuenv-action-key` = the local blake3 action digest, so every
//!   component of the local key (dependencies, custom components, version, platform) is part
//!   of the remote key too; a `cacheKey` that replaces the inputs goes into `salt`.
//!
//! The `Command`, the `Action` and every `Directory` are uploaded with a result, since some
//! servers check that an action's protos exist.

use std::collections::BTreeMap;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;

use super::negotiate::DigestFunction;
use crate::Digest;
use crate::key_gen::{InputFile, InputKind, InputPart, KeyManifest};

/// The platform property that carries the local action digest.
pub(crate) const ACTION_KEY_PROPERTY: &str = "cuenv-action-key";

/// A remote action key and the protos that make it up.
#[derive(Debug)]
pub(crate) struct RemoteAction {
    /// The `Action`'s digest: the key in the remote action cache.
    pub(crate) digest: reapi::Digest,
    /// The encoded `Command`, `Action` and `Directory` protos with their digests.
    pub(crate) protos: Vec<(reapi::Digest, Vec<u8>)>,
}

/// Builds the remote action for the result stored locally under `local_digest`.
pub(crate) fn remote_action(
    function: DigestFunction,
    local_digest: &Digest,
    manifest: &KeyManifest,
) -> RemoteAction {
    let mut protos = Vec::new();
    let command = command(manifest).encode_to_vec();
    let command_digest = function.digest(&command);
    protos.push((command_digest.clone(), command));
    let root = input_tree(manifest.input_files());
    let input_root_digest = root.encode(function, &mut protos);
    let salt = match &manifest.inputs {
        InputPart::CacheKey(key) => key.clone().into_bytes(),
        InputPart::Files(_) => Vec::new(),
    };
    let action = reapi::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(input_root_digest),
        salt,
        platform: Some(reapi::Platform {
            properties: vec![reapi::platform::Property {
                name: ACTION_KEY_PROPERTY.to_owned(),
                value: local_digest.to_hex(),
            }],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let digest = function.digest(&action);
    protos.push((digest.clone(), action));
    RemoteAction { digest, protos }
}

fn command(manifest: &KeyManifest) -> reapi::Command {
    let mut arguments = vec!["sh".to_owned(), "-c".to_owned(), manifest.command.clone()];
    arguments.extend(manifest.args.iter().cloned());
    let environment_variables = manifest
        .env
        .iter()
        .map(|(name, value)| reapi::command::EnvironmentVariable {
            name: name.clone(),
            value: value.to_hex(),
        })
        .collect();
    let mut output_paths = manifest.outputs.clone();
    output_paths.sort();
    output_paths.dedup();
    reapi::Command {
        arguments,
        environment_variables,
        output_paths,
        working_directory: manifest.working_dir.clone(),
        // Output files carry their mode (`NodeProperties.unix_mode`).
        output_node_properties: vec!["unix_mode".to_owned()],
        ..Default::default()
    }
}

/// A directory of the input tree, children by name (so encoded in REAPI's sorted order).
#[derive(Debug, Default)]
struct Dir {
    files: BTreeMap<String, (Digest, u64, bool)>,
    symlinks: BTreeMap<String, String>,
    dirs: BTreeMap<String, Dir>,
}

fn input_tree(files: &[InputFile]) -> Dir {
    let mut root = Dir::default();
    for file in files {
        let mut parts: Vec<&str> =
            file.path.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
        let Some(name) = parts.pop() else { continue };
        let dir = parts
            .into_iter()
            .fold(&mut root, |dir, part| dir.dirs.entry(part.to_owned()).or_default());
        match file.kind {
            InputKind::Symlink => {
                dir.symlinks.insert(name.to_owned(), file.hash.to_hex());
            }
            InputKind::File | InputKind::Executable => {
                let executable = file.kind == InputKind::Executable;
                dir.files.insert(name.to_owned(), (file.hash, file.size, executable));
            }
        }
    }
    root
}

impl Dir {
    /// Encodes this directory (children first) into `out`; returns its digest.
    fn encode(
        &self,
        function: DigestFunction,
        out: &mut Vec<(reapi::Digest, Vec<u8>)>,
    ) -> reapi::Digest {
        let directories = self
            .dirs
            .iter()
            .map(|(name, dir)| reapi::DirectoryNode {
                name: name.clone(),
                digest: Some(dir.encode(function, out)),
            })
            .collect();
        let files = self
            .files
            .iter()
            .map(|(name, (hash, size, executable))| reapi::FileNode {
                name: name.clone(),
                digest: Some(input_digest(function, hash, *size)),
                is_executable: *executable,
                node_properties: None,
            })
            .collect();
        let symlinks = self
            .symlinks
            .iter()
            .map(|(name, target)| reapi::SymlinkNode {
                name: name.clone(),
                target: target.clone(),
                node_properties: None,
            })
            .collect();
        let bytes = reapi::Directory { files, directories, symlinks, node_properties: None }
            .encode_to_vec();
        // Equal subtrees appear once per occurrence here; the upload drops duplicates.
        let digest = function.digest(&bytes);
        out.push((digest.clone(), bytes));
        digest
    }
}

/// The digest an input file gets in the input root (see the module docs).
fn input_digest(function: DigestFunction, hash: &Digest, size: u64) -> reapi::Digest {
    let hash = match function {
        DigestFunction::Blake3 => hash.to_hex(),
        DigestFunction::Sha256 => function.hash(&hash.0),
    };
    reapi::Digest { hash, size_bytes: i64::try_from(size).unwrap_or(i64::MAX) }
}

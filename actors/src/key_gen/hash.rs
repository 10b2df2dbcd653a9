//! File hashing: one read per small file, and a parallel tree hash for large ones.
//!
//! blake3 is a tree hash, so a large file is split into aligned subtrees that rayon tasks read
//! (positioned reads, no shared cursor) and hash on separate cores, then merged. Reading and
//! hashing overlap across cores, which a read-everything-then-`update_rayon` cannot do.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::Digest;

/// Files at least this large are hashed as a parallel tree.
pub const LARGE_FILE: u64 = 128 * 1024;

/// The size of a subtree read and hashed by one rayon task. A power of two, so every leaf is a
/// valid blake3 subtree.
const LEAF: u64 = 1 << 20;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes the `len` bytes of `file` (its size when stat'ed). Large files fan out over the current
/// rayon pool; call from inside the pool that should do the work. A file that shrinks while it is
/// read is an `UnexpectedEof` error.
pub fn hash_open_file(file: &File, len: u64) -> io::Result<Digest> {
    if len < LARGE_FILE {
        return hash_small(file, len);
    }
    let left = left_subtree_len(len);
    let (left_cv, right_cv) =
        rayon::join(|| subtree(file, 0, left), || subtree(file, left, len - left));
    Ok(merge_subtrees_root(&left_cv?, &right_cv?, Mode::Hash).into())
}

/// [`hash_open_file`] with a large file's tree hashed on `pool` (a no-op hop when already on
/// it), and a small file hashed right here, without waking the pool.
pub fn hash_open_file_on(pool: &rayon::ThreadPool, file: &File, len: u64) -> io::Result<Digest> {
    if len < LARGE_FILE {
        hash_small(file, len)
    } else {
        pool.install(|| hash_open_file(file, len))
    }
}

/// One positioned read of exactly the stat'ed length (no second read to find the end: that
/// extra syscall per file is a measurable share of a cold key over thousands of small files).
fn hash_small(file: &File, len: u64) -> io::Result<Digest> {
    BUFFER.with_borrow_mut(|buffer| {
        buffer.resize(usize::try_from(len).unwrap_or(0), 0);
        file.read_exact_at(buffer, 0)?;
        Ok(Digest::of(buffer))
    })
}

fn subtree(file: &File, offset: u64, len: u64) -> io::Result<blake3::hazmat::ChainingValue> {
    if len > LEAF {
        let left = left_subtree_len(len);
        let (left_cv, right_cv) = rayon::join(
            || subtree(file, offset, left),
            || subtree(file, offset + left, len - left),
        );
        return Ok(merge_subtrees_non_root(&left_cv?, &right_cv?, Mode::Hash));
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.resize(usize::try_from(len).unwrap_or(0), 0);
        file.read_exact_at(buffer, offset)?;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        hasher.update(buffer);
        Ok(hasher.finalize_non_root())
    })
}

/// Hashes a whole stream in one thread (blobs arriving from elsewhere, logs).
pub fn hash_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    hash_reader_with(reader, |_| {})
}

/// [`hash_reader`], showing `each` every piece as it is hashed.
pub fn hash_reader_with(
    mut reader: impl Read,
    mut each: impl FnMut(&[u8]),
) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..count]);
        each(&buffer[..count]);
        total += count as u64;
    }
    Ok((hasher.finalize().into(), total))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn tree_hash_matches_plain_blake3_at_awkward_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0,
            1,
            1024,
            1025,
            LARGE_FILE - 1,
            LARGE_FILE,
            LARGE_FILE + 1,
            LEAF,
            LEAF + 1,
            3 * LEAF + 12345,
        ];
        for size in sizes {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            File::create(&path).unwrap().write_all(&data).unwrap();
            let file = File::open(&path).unwrap();
            assert_eq!(hash_open_file(&file, size).unwrap(), Digest::of(&data), "size {size}");
            assert_eq!(hash_reader(&data[..]).unwrap(), (Digest::of(&data), size));
        }
    }

    #[test]
    fn a_file_shorter_than_its_stat_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        File::create(&path).unwrap().write_all(&[7u8; 1000]).unwrap();
        let file = File::open(&path).unwrap();
        let error = hash_open_file(&file, 4 * LEAF).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}

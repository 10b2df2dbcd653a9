//! The access index: when each record was written and read, how often, and which blobs it
//! references, so eviction can order records by policy without decoding them.
//!
//! Processes sharing a cache dir never rewrite the index on the hot path. Each one appends its
//! events to the journal (checksummed frames, one `write` per flush, under a lock on
//! `index.lock`); gc and compaction fold the journal into the index file under the same lock.
//! The index is a cache of facts the files also hold: a lost or corrupt index or journal is
//! rebuilt from the records themselves at the next gc.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::layout::Layout;
use crate::{Digest, envelope, fsio};

const INDEX_MAGIC: [u8; 4] = *b"CUIX";
const USAGE_MAGIC: [u8; 4] = *b"CUUS";
const VERSION: u16 = 1;
const FRAME_HEADER: usize = 4 + 8;

/// A journal past this size is folded into the index at the next flush.
pub(super) const COMPACT_AT: u64 = 4 << 20;

/// Something that happened to a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Event {
    /// A record was written.
    Wrote { digest: Digest, at_ms: u64, record_size: u64, blobs: Vec<(Digest, u64)> },
    /// A record was read as a hit.
    Read { digest: Digest, at_ms: u64 },
}

/// What the index knows of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) written_ms: u64,
    pub(super) last_access_ms: u64,
    pub(super) hits: u64,
    pub(super) record_size: u64,
    pub(super) blobs: Vec<(Digest, u64)>,
}

impl Entry {
    /// The record's size plus the sizes of the blobs it references.
    pub(super) fn total_size(&self) -> u64 {
        self.record_size + self.blobs.iter().map(|(_, size)| size).sum::<u64>()
    }
}

/// The index as a map.
pub(super) type Index = HashMap<Digest, Entry>;

/// Events of this process not yet appended to the journal.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// A std mutex: pushed to and drained without awaiting.
    pub(super) pending: Mutex<Vec<Event>>,
    /// Bytes this process added to the store since the last flush.
    bytes_added: AtomicU64,
}

impl Journal {
    pub(super) fn note(&self, event: Event) {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(event);
    }

    pub(super) fn added(&self, bytes: u64) {
        self.bytes_added.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn unflushed_bytes(&self) -> u64 {
        self.bytes_added.load(Ordering::Relaxed)
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Appends pending events to the journal and adds this process's new bytes to the usage
    /// file. Returns the journal's size afterwards.
    pub(super) fn flush(&self, layout: &Layout) -> io::Result<u64> {
        let events = std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let added = self.bytes_added.swap(0, Ordering::Relaxed);
        if events.is_empty() && added == 0 {
            return fs::metadata(layout.journal()).map(|m| m.len()).or(Ok(0));
        }
        let mut frames = Vec::new();
        for event in &events {
            encode_frame(event, &mut frames);
        }
        let lock = lock_index(layout)?;
        let mut journal = OpenOptions::new().create(true).append(true).open(layout.journal())?;
        journal.write_all(&frames)?;
        let size = journal.metadata()?.len();
        // Hits only append access events; the usage file (a new inode each time it is
        // replaced) is rewritten only when bytes were added.
        if added > 0 {
            write_usage(layout, read_usage(layout).saturating_add(added))?;
        }
        drop(lock);
        Ok(size)
    }
}

/// Takes the exclusive lock on `index.lock`; dropping the file releases it.
pub(super) fn lock_index(layout: &Layout) -> io::Result<File> {
    fsio::lock_file(&layout.index_lock(), true)
}

fn encode_frame(event: &Event, out: &mut Vec<u8>) {
    let payload = postcard::to_allocvec(event).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&blake3::hash(&payload).as_bytes()[..8]);
    out.extend_from_slice(&payload);
}

/// Reads the journal's events, stopping at the first damaged frame (a writer that died mid-way).
pub(super) fn read_journal(layout: &Layout) -> Vec<Event> {
    let bytes = fs::read(layout.journal()).unwrap_or_default();
    let mut events = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= FRAME_HEADER {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else { break };
        if blake3::hash(payload).as_bytes()[..8] != rest[4..12] {
            tracing::warn!(path = %layout.journal().display(), "damaged journal frame; the rest is rebuilt from the files");
            break;
        }
        match postcard::from_bytes(payload) {
            Ok(event) => events.push(event),
            Err(_) => break,
        }
        rest = &rest[FRAME_HEADER + len..];
    }
    events
}

/// Folds events into an index.
pub(super) fn apply(index: &mut Index, events: Vec<Event>) {
    for event in events {
        match event {
            Event::Wrote { digest, at_ms, record_size, blobs } => {
                let previous = index.get(&digest);
                let (last_access_ms, hits) =
                    previous.map_or((at_ms, 0), |e| (e.last_access_ms.max(at_ms), e.hits));
                index.insert(
                    digest,
                    Entry { written_ms: at_ms, last_access_ms, hits, record_size, blobs },
                );
            }
            Event::Read { digest, at_ms } => {
                if let Some(entry) = index.get_mut(&digest) {
                    entry.last_access_ms = entry.last_access_ms.max(at_ms);
                    entry.hits += 1;
                }
            }
        }
    }
}

/// Loads the compacted index. A corrupt one is set aside with one warning and starts empty
/// (gc rebuilds it from the records).
pub(super) fn load_index(layout: &Layout) -> Index {
    let path = layout.index();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(_) => return Index::new(),
    };
    let decoded = envelope::open(INDEX_MAGIC, VERSION, &bytes)
        .map_err(|error| error.to_string())
        .and_then(|payload| {
            postcard::from_bytes::<Vec<(Digest, Entry)>>(payload).map_err(|e| e.to_string())
        });
    match decoded {
        Ok(entries) => entries.into_iter().collect(),
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "cache index is corrupt; rebuilding it from the records");
            let _ = fs::rename(&path, path.with_extension("corrupt"));
            Index::new()
        }
    }
}

/// Writes the index and empties the journal. Call with the index lock held.
pub(super) fn store_index(layout: &Layout, index: &Index) -> io::Result<()> {
    let entries: Vec<(&Digest, &Entry)> = index.iter().collect();
    let payload = postcard::to_allocvec(&entries).unwrap_or_default();
    fsio::write_atomic_via(
        &layout.tmp(),
        &layout.index(),
        &envelope::seal(INDEX_MAGIC, VERSION, &payload),
        true,
    )?;
    match OpenOptions::new().write(true).open(layout.journal()) {
        Ok(journal) => journal.set_len(0),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// The approximate bytes stored, as last written (0 if unknown).
pub(super) fn read_usage(layout: &Layout) -> u64 {
    let Ok(bytes) = fs::read(layout.usage()) else { return 0 };
    envelope::open(USAGE_MAGIC, VERSION, &bytes)
        .ok()
        .and_then(|payload| payload.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Records the bytes stored. Call with the index lock held.
pub(super) fn write_usage(layout: &Layout, bytes: u64) -> io::Result<()> {
    let sealed = envelope::seal(USAGE_MAGIC, VERSION, &bytes.to_le_bytes());
    fsio::write_atomic_via(&layout.tmp(), &layout.usage(), &sealed, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_stops_at_damage() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.tmp()).unwrap();
        let journal = Journal::default();
        let digest = Digest::of(b"a");
        journal.note(Event::Wrote {
            digest,
            at_ms: 1,
            record_size: 10,
            blobs: vec![(Digest::of(b"b"), 5)],
        });
        journal.note(Event::Read { digest, at_ms: 7 });
        journal.added(15);
        journal.flush(&layout).unwrap();
        assert_eq!(read_usage(&layout), 15);
        let events = read_journal(&layout);
        assert_eq!(events.len(), 2);
        let mut index = Index::new();
        apply(&mut index, events);
        assert_eq!(index[&digest].hits, 1);
        assert_eq!(index[&digest].last_access_ms, 7);
        assert_eq!(index[&digest].total_size(), 15);

        // A torn tail (a writer killed mid-append) loses only the torn frame.
        let mut bytes = fs::read(layout.journal()).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(layout.journal(), &bytes).unwrap();
        assert_eq!(read_journal(&layout).len(), 2);
    }
}

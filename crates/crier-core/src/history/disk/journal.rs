//! Telling a torn journal tail from fjall's preallocation.
//!
//! fjall creates each journal file at 64 MiB of zeros and, when it recovers, truncates
//! everything after the last complete batch, zeros included. Comparing sizes before
//! and after opening therefore reports a "cut" of tens of MiB after every clean
//! shutdown. A real torn or corrupt tail is non-zero bytes after the last complete
//! batch, so what counts is where each file's data ends, not its length.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Offset just past the last non-zero byte of `file` (0 for an all-zero file).
fn data_end(file: &File, len: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        // Slice equality is a memcmp, fast even in a debug build; the preallocated
        // region is sparse, so reading it costs no disk I/O.
        if chunk != &ZEROS[..chunk.len()] {
            let last = chunk.iter().rposition(|b| *b != 0).unwrap_or(0);
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Where the data of each journal file (`*.jnl`) in `dir` ends, before fjall opens it.
pub(super) fn data_ends(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .filter_map(|p| {
            let file = File::open(&p).ok()?;
            let len = file.metadata().ok()?.len();
            let end = data_end(&file, len).ok()?;
            Some((p, end))
        })
        .collect()
}

/// Bytes of data fjall cut off while opening: for each file it kept, how far its
/// length now falls short of where its data ended. Zero after a clean shutdown.
pub(super) fn bytes_cut(before: &[(PathBuf, u64)]) -> u64 {
    before
        .iter()
        .filter_map(|(path, end)| {
            let len = std::fs::metadata(path).ok()?.len();
            Some(end.saturating_sub(len))
        })
        .sum()
}

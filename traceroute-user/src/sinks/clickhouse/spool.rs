//! The on-disk spool: every batch is written here before it is sent and
//! removed once the store has taken it, so a store that is down, or an
//! agent restarted, loses nothing, and the agent's memory holds one batch at
//! most. Bounded: past `max_bytes` the oldest batches go (counted and
//! logged), the one case where records are lost.
//!
//! A batch is one file, `<sequence>.batch`, written to a temporary name and
//! renamed, so a crash leaves whole batches or none: a header line
//! (`{"records":N,"first_ms":T,"paths_bytes":P}`), then the `paths` rows, then
//! the `hops` rows, both as JSON lines.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A batch's rows, as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub records: u64,
    /// Timestamp (ms) of its oldest record.
    pub first_ms: u64,
    pub paths: Vec<u8>,
    pub hops: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    records: u64,
    first_ms: u64,
    paths_bytes: usize,
}

/// What the spool holds, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolState {
    pub batches: usize,
    pub bytes: u64,
    /// Timestamp (ms) of the oldest spooled record.
    pub oldest_ms: Option<u64>,
}

/// Batches dropped to stay within the bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
}

pub struct Spool {
    /// Held while the spool is open: two agents on one spool would number
    /// their batches over each other.
    _lock: nix::fcntl::Flock<fs::File>,
    dir: PathBuf,
    max_bytes: u64,
    /// sequence -> (bytes, records, first_ms); the files are the truth, this
    /// is what was learnt of them.
    batches: BTreeMap<u64, (u64, u64, u64)>,
    next: u64,
}

impl Spool {
    /// Opens (creating, mode 0750) `dir` and takes over the batches a
    /// previous run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("spool {}: {e}", dir.display())))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o640)
            .open(dir.join(".lock"))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "spool {} is in use by another process ({errno}); give each agent its own spool_dir",
                        dir.display()
                    ),
                )
            })?;
        let mut batches = BTreeMap::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A batch whose writing was interrupted: never complete.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(".batch")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match read_header(&entry.path()) {
                Ok(h) => {
                    let bytes = entry.metadata()?.len();
                    batches.insert(seq, (bytes, h.records, h.first_ms));
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), "unreadable spool batch set aside: {e}");
                    let _ = fs::rename(entry.path(), entry.path().with_extension("bad"));
                }
            }
        }
        let next = batches.keys().next_back().map_or(0, |s| s + 1);
        Ok(Spool {
            _lock: lock,
            dir: dir.to_path_buf(),
            max_bytes,
            batches,
            next,
        })
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016}.batch"))
    }

    /// Writes `batch` durably (fsync before rename). Makes room first by
    /// dropping the oldest batches; what was dropped is returned.
    pub fn push(&mut self, batch: &Batch) -> io::Result<Dropped> {
        let header = serde_json::to_vec(&Header {
            records: batch.records,
            first_ms: batch.first_ms,
            paths_bytes: batch.paths.len(),
        })
        .map_err(io::Error::other)?;
        let bytes = (header.len() + 1 + batch.paths.len() + batch.hops.len()) as u64;
        let mut dropped = Dropped::default();
        while self.state().bytes + bytes > self.max_bytes {
            let Some((seq, (_, records, _))) = self.batches.pop_first() else {
                break;
            };
            let _ = fs::remove_file(self.file(seq));
            dropped.batches += 1;
            dropped.records += records;
        }
        let seq = self.next;
        let tmp = self.dir.join(format!("{seq:016}.tmp"));
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&tmp)?;
            f.write_all(&header)?;
            f.write_all(b"\n")?;
            f.write_all(&batch.paths)?;
            f.write_all(&batch.hops)?;
            f.sync_all()?;
            fs::rename(&tmp, self.file(seq))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.next += 1;
        self.batches
            .insert(seq, (bytes, batch.records, batch.first_ms));
        Ok(dropped)
    }

    /// The oldest batch's sequence number.
    pub fn first(&self) -> Option<u64> {
        self.batches.keys().next().copied()
    }

    /// The oldest batch and its sequence number.
    pub fn oldest(&self) -> io::Result<Option<(u64, Batch)>> {
        let Some(&seq) = self.batches.keys().next() else {
            return Ok(None);
        };
        let data = fs::read(self.file(seq))?;
        let newline = data
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| io::Error::other("no header"))?;
        let header: Header = serde_json::from_slice(&data[..newline]).map_err(io::Error::other)?;
        let body = &data[newline + 1..];
        if header.paths_bytes > body.len() {
            return Err(io::Error::other("truncated batch"));
        }
        let (paths, hops) = body.split_at(header.paths_bytes);
        Ok(Some((
            seq,
            Batch {
                records: header.records,
                first_ms: header.first_ms,
                paths: paths.to_vec(),
                hops: hops.to_vec(),
            },
        )))
    }

    /// Forgets a batch the store has taken (or one that cannot be read).
    pub fn remove(&mut self, seq: u64) {
        if self.batches.remove(&seq).is_some() {
            let _ = fs::remove_file(self.file(seq));
        }
    }

    /// Sets a batch aside that cannot be read back (renamed `.bad`, kept for
    /// a person to look at, no longer counted).
    pub fn set_aside(&mut self, seq: u64) {
        if self.batches.remove(&seq).is_some() {
            let file = self.file(seq);
            let _ = fs::rename(&file, file.with_extension("bad"));
        }
    }

    pub fn state(&self) -> SpoolState {
        SpoolState {
            batches: self.batches.len(),
            bytes: self.batches.values().map(|(b, _, _)| b).sum(),
            oldest_ms: self.batches.values().map(|(_, _, first)| *first).min(),
        }
    }
}

fn read_header(path: &Path) -> io::Result<Header> {
    use std::io::BufRead;
    let mut line = Vec::new();
    io::BufReader::new(fs::File::open(path)?).read_until(b'\n', &mut line)?;
    serde_json::from_slice(line.trim_ascii_end()).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> Batch {
        Batch {
            records: n,
            first_ms: 1000 + n,
            paths: format!("{{\"p\":{n}}}\n").into_bytes(),
            hops: format!("{{\"h\":{n}}}\n{{\"h\":{n}}}\n").into_bytes(),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("trl-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn batches_come_back_oldest_first_and_survive_a_restart() {
        let d = dir("restart");
        let mut spool = Spool::open(&d, 1 << 20).unwrap();
        spool.push(&batch(1)).unwrap();
        spool.push(&batch(2)).unwrap();
        // A batch interrupted while written, and a stranger's file.
        fs::write(d.join("0000000000000009.tmp"), b"half").unwrap();
        fs::write(d.join("notes.txt"), b"x").unwrap();
        drop(spool);

        let mut spool = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(spool.state().batches, 2);
        assert_eq!(spool.state().oldest_ms, Some(1001));
        let (seq, first) = spool.oldest().unwrap().unwrap();
        assert_eq!(first, batch(1));
        spool.remove(seq);
        assert_eq!(spool.oldest().unwrap().unwrap().1, batch(2));
        // New batches are numbered after the ones found.
        spool.push(&batch(3)).unwrap();
        assert!(!d.join("0000000000000009.tmp").exists());
        assert!(d.join("notes.txt").exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_batches_and_says_how_many_records() {
        let d = dir("full");
        let one = {
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            s.push(&batch(1)).unwrap();
            let bytes = s.state().bytes;
            s.remove(0);
            bytes
        };
        // Room for three batches of this size.
        let mut spool = Spool::open(&d, one * 3 + one / 2).unwrap();
        for n in 1..=3 {
            assert_eq!(spool.push(&batch(n)).unwrap(), Dropped::default());
        }
        let dropped = spool.push(&batch(4)).unwrap();
        assert_eq!(
            dropped,
            Dropped {
                batches: 1,
                records: 1
            }
        );
        assert_eq!(spool.state().batches, 3);
        assert_eq!(spool.oldest().unwrap().unwrap().1, batch(2));
        assert!(spool.state().bytes <= one * 3 + one / 2);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn one_spool_serves_one_agent() {
        let d = dir("lock");
        let first = Spool::open(&d, 1 << 20).unwrap();
        let err = Spool::open(&d, 1 << 20).err().expect("a second opener is refused");
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(first);
        Spool::open(&d, 1 << 20).expect("free again once the first is gone");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_batch_is_set_aside_not_sent_and_not_fatal() {
        let d = dir("damaged");
        let mut spool = Spool::open(&d, 1 << 20).unwrap();
        spool.push(&batch(1)).unwrap();
        drop(spool);
        fs::write(d.join("0000000000000005.batch"), b"not a header").unwrap();
        let spool = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(spool.state().batches, 1);
        assert!(d.join("0000000000000005.bad").exists());
        let _ = fs::remove_dir_all(&d);
    }
}

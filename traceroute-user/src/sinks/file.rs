//! JSON lines for log shippers: to stdout, or appended to a file that can be
//! rotated (rename it, then SIGHUP the agent: [`JsonLines::reopen`]).
//!
//! Every record is one `write(2)` of a complete line on an `O_APPEND` file
//! descriptor, with no userspace buffer in between: a reader never sees a
//! partial line from us, and nothing waits in a buffer when the process dies.
//! Should a write fail half-way (disk full), the file is truncated back to
//! where the line started.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::path::NetworkPath;
use crate::sync::LockExt;

/// Where JSON lines go. Shared between tasks (`&self` methods).
pub struct JsonLines {
    target: Mutex<Target>,
}

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))
}

impl JsonLines {
    pub fn stdout() -> JsonLines {
        JsonLines {
            target: Mutex::new(Target::Stdout),
        }
    }

    /// Appends to `path`, creating it (mode 0640) if needed.
    pub fn file(path: impl Into<PathBuf>) -> io::Result<JsonLines> {
        let path = path.into();
        let file = open(&path)?;
        Ok(JsonLines {
            target: Mutex::new(Target::File { path, file }),
        })
    }

    /// The file written to, `None` for stdout.
    pub fn path(&self) -> Option<PathBuf> {
        match &*self.target.locked() {
            Target::Stdout => None,
            Target::File { path, .. } => Some(path.clone()),
        }
    }

    /// Opens the path again (after logrotate renamed the file); a no-op for
    /// stdout. On error the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let mut target = self.target.locked();
        if let Target::File { path, file } = &mut *target {
            *file = open(path)?;
        }
        Ok(())
    }

    /// Writes one record as one complete line.
    pub fn write(&self, path: &NetworkPath) -> io::Result<()> {
        let mut line = serde_json::to_vec(path).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write_line(&line)
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut target = self.target.locked();
        match &mut *target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            Target::File { file, .. } => {
                let start = file.metadata()?.len();
                if let Err(e) = file.write_all(line) {
                    // Never leave half a line behind.
                    let _ = file.set_len(start);
                    return Err(e);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_reopens_after_rename() {
        let dir = std::env::temp_dir().join(format!("jsonlines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let sink = JsonLines::file(&path).unwrap();
        sink.write_line(b"{\"a\":1}\n").unwrap();
        std::fs::rename(&path, dir.join("out.jsonl.1")).unwrap();
        // Still writing to the renamed file until reopened.
        sink.write_line(b"{\"a\":2}\n").unwrap();
        sink.reopen().unwrap();
        sink.write_line(b"{\"a\":3}\n").unwrap();
        let old = std::fs::read_to_string(dir.join("out.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(new, "{\"a\":3}\n");
        assert_eq!(sink.path(), Some(path));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The embedded store: minute buckets per signature, kept across restarts and crashes.
//!
//! redb commits are copy-on-write with a checksummed root, so a `kill -9` loses at most
//! what was not yet flushed. Rows are keyed `(minute, signature)` so retention is one
//! range delete. A file that is not ours, or that redb cannot read, is renamed aside
//! (`<name>.corrupt-<millis>`) and a fresh store is started: history is never silently
//! overwritten.

use crate::sample::Millis;
use crate::series::{Bucket, Cell};
use crate::signature::SignatureId;
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `(minute start, signature)` → `(requests, work in µs)`.
const SERIES: TableDefinition<(u64, u32), (u64, u64)> = TableDefinition::new("series_v1");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "prescale-series-v1";

/// The totals row of a minute is stored under this signature id.
const TOTAL: SignatureId = u32::MAX;

/// An open store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// A store that was opened, and where an unreadable predecessor was moved, if any.
pub struct Opened {
    pub store: Store,
    pub set_aside: Option<(PathBuf, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store {path}: {reason}")]
    Io { path: String, reason: String },
}

// === impl Store ===

impl Store {
    /// Opens or creates the store at `path`. `now` only names a set-aside file.
    pub fn open(path: &Path, now: Millis) -> Result<Opened, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(path, e))?;
        }
        let aside = PathBuf::from(format!("{}.corrupt-{now}", path.display()));
        // Opening for writing repairs a file that was not closed cleanly, in place, and a
        // repair of a damaged file can rewrite parts of it before it fails. So a file that
        // does not open read-only (which never writes) is copied first: what is set aside
        // is then the file exactly as it was.
        let copied = match ReadOnlyDatabase::open(path) {
            Ok(db) => {
                drop(db);
                false
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(in_use(path)),
            Err(_) if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) => {
                std::fs::copy(path, &aside).map_err(|e| {
                    // A copy cut short (disk full) is no backup: never leave it behind.
                    let _ = std::fs::remove_file(&aside);
                    io(path, e)
                })?;
                true
            }
            Err(_) => false,
        };
        let problem = match Database::create(path) {
            Ok(db) => match check_format(&db) {
                Ok(()) => {
                    if copied {
                        // Repaired: the copy is not needed.
                        let _ = std::fs::remove_file(&aside);
                    }
                    return Ok(Opened {
                        store: Store {
                            db,
                            path: path.to_path_buf(),
                        },
                        set_aside: None,
                    });
                }
                Err(reason) => reason,
            },
            // Another process holds it: setting it aside would break that process.
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                if copied {
                    let _ = std::fs::remove_file(&aside);
                }
                return Err(in_use(path));
            }
            Err(e) => e.to_string(),
        };
        if copied {
            // The copy is the original; this one may hold a failed repair's writes.
            std::fs::remove_file(path).map_err(|e| io(path, e))?;
        } else {
            std::fs::rename(path, &aside).map_err(|e| io(path, e))?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        check_format(&db).map_err(|reason| StoreError::Open {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Opened {
            store: Store {
                db,
                path: path.to_path_buf(),
            },
            set_aside: Some((aside, problem)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes (overwrites) minute buckets and deletes rows older than `keep_from`.
    pub fn write(&self, buckets: &[&Bucket], keep_from: Millis) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| io(&self.path, e))?;
        {
            let mut t = txn.open_table(SERIES).map_err(|e| io(&self.path, e))?;
            for b in buckets {
                let rows = b
                    .by_signature
                    .iter()
                    .chain(std::iter::once((&TOTAL, &b.total)));
                for (sig, cell) in rows {
                    t.insert((b.start, *sig), (cell.requests, cell.work_us))
                        .map_err(|e| io(&self.path, e))?;
                }
            }
            t.retain_in(..(keep_from, 0), |_, _| false)
                .map_err(|e| io(&self.path, e))?;
        }
        txn.commit().map_err(|e| io(&self.path, e))
    }

    /// Minute buckets starting at or after `since`, oldest first.
    pub fn load(&self, since: Millis) -> Result<Vec<Bucket>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| io(&self.path, e))?;
        let t = match txn.open_table(SERIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, e)),
        };
        let mut out: BTreeMap<u64, Bucket> = BTreeMap::new();
        for row in t.range((since, 0)..).map_err(|e| io(&self.path, e))? {
            let (k, v) = row.map_err(|e| io(&self.path, e))?;
            let ((start, sig), (requests, work_us)) = (k.value(), v.value());
            let b = out.entry(start).or_insert_with(|| Bucket {
                start,
                total: Cell::default(),
                by_signature: BTreeMap::new(),
            });
            let cell = Cell { requests, work_us };
            if sig == TOTAL {
                b.total = cell;
            } else {
                b.by_signature.insert(sig, cell);
            }
        }
        Ok(out.into_values().collect())
    }
}

/// A new file gets our format marker; an existing one must carry it.
fn check_format(db: &Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let found = meta
            .get(FORMAT_KEY)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_string());
        match found {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(format!("foreign store format {f:?}")),
            None => {
                // A file with tables but no marker is someone else's redb database.
                let tables = txn.list_tables().map_err(|e| e.to_string())?.count();
                if tables > 1 {
                    return Err("a redb database that is not a prescale store".into());
                }
                meta.insert(FORMAT_KEY, FORMAT).map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

fn in_use(path: &Path) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        reason: "in use by another process".into(),
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start: Millis, sig: SignatureId, requests: u64) -> Bucket {
        let cell = Cell {
            requests,
            work_us: requests * 1000,
        };
        Bucket {
            start,
            total: cell,
            by_signature: BTreeMap::from([(sig, cell)]),
        }
    }

    #[test]
    fn rows_survive_reopening_and_retention_deletes_old_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.redb");
        {
            let s = Store::open(&path, 0).unwrap().store;
            let (a, b) = (bucket(60_000, 1, 5), bucket(120_000, 2, 7));
            s.write(&[&a, &b], 0).unwrap();
            // Overwrite one minute with its later, larger total.
            s.write(&[&bucket(120_000, 2, 9)], 0).unwrap();
        }
        let opened = Store::open(&path, 0).unwrap();
        assert!(opened.set_aside.is_none());
        let rows = opened.store.load(0).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].by_signature[&2].requests, 9);
        assert_eq!(rows[1].total.requests, 9);
        // Retention: everything before 120 000 goes.
        opened.store.write(&[], 120_000).unwrap();
        assert_eq!(opened.store.load(0).unwrap().len(), 1);
    }

    #[test]
    fn a_foreign_or_truncated_file_is_set_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("series.redb");
        std::fs::write(&path, b"this is not a database").unwrap();
        let opened = Store::open(&path, 42).unwrap();
        let (aside, reason) = opened.set_aside.clone().expect("garbage must be set aside");
        assert!(aside.ends_with("series.redb.corrupt-42"), "{aside:?}");
        assert!(!reason.is_empty());
        assert_eq!(std::fs::read(&aside).unwrap(), b"this is not a database");
        // The fresh store works.
        opened.store.write(&[&bucket(0, 1, 1)], 0).unwrap();
        drop(opened);

        // Truncate a real store to half its size.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let truncated = std::fs::read(&path).unwrap();
        let opened = Store::open(&path, 43).unwrap();
        let (aside, _) = opened
            .set_aside
            .clone()
            .expect("a truncated store must be set aside");
        // Byte for byte: the failed repair attempt did not touch what was set aside.
        assert!(std::fs::read(&aside).unwrap() == truncated);
        assert!(opened.store.load(0).unwrap().is_empty());
    }
}

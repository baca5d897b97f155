//! JSON lines to a file that rotates by size: `out.jsonl` becomes
//! `out.jsonl.1`, the old `.1` becomes `.2`, and so on up to `keep`.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write as _},
    path::PathBuf,
};

use super::SinkError;

/// Where and how much.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The live file.
    pub path: PathBuf,
    /// Rotate when the live file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// The open, rotating file.
#[derive(Debug)]
pub struct RotatingFile {
    config: FileConfig,
    out: BufWriter<File>,
    size: u64,
}

fn rotated(path: &std::path::Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (appending to) the live file.
    ///
    /// # Errors
    /// [`SinkError::OpenSinkFile`].
    pub fn open(config: FileConfig) -> Result<Self, SinkError> {
        let open_err = |source| SinkError::OpenSinkFile {
            path: config.path.clone(),
            source,
        };
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        Ok(Self {
            out: BufWriter::new(file),
            size,
            config,
        })
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        let err = |source| SinkError::WriteSinkFile {
            path: self.config.path.clone(),
            source,
        };
        self.out.flush().map_err(err)?;
        let path = &self.config.path;
        if self.config.keep == 0 {
            std::fs::remove_file(path).map_err(err)?;
        } else {
            let _ = std::fs::remove_file(rotated(path, self.config.keep));
            for n in (1..self.config.keep).rev() {
                let from = rotated(path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(path, n + 1)).map_err(err)?;
                }
            }
            std::fs::rename(path, rotated(path, 1)).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    /// Appends one line (a newline is added), rotating first when needed.
    ///
    /// # Errors
    /// [`SinkError::WriteSinkFile`].
    pub fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        let err = |source| SinkError::WriteSinkFile {
            path: self.config.path.clone(),
            source,
        };
        self.out.write_all(line.as_bytes()).map_err(err)?;
        self.out.write_all(b"\n").map_err(err)?;
        self.out.flush().map_err(err)?;
        self.size += len;
        Ok(())
    }

    /// Flushes buffered bytes.
    ///
    /// # Errors
    /// [`SinkError::WriteSinkFile`].
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::WriteSinkFile {
            path: self.config.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut f = RotatingFile::open(FileConfig {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        for i in 0..20 {
            f.write_line(&format!(
                "{{\"n\":\"{i:03}\",\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}"
            ))
            .unwrap();
        }
        f.flush().unwrap();
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.len() <= 100, "{}", live.len());
        assert!(live.contains("\"n\":\"019\""));
        assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let older = std::fs::read_to_string(rotated(&path, 2)).unwrap();
        assert!(!older.is_empty());
        // Every kept line is whole JSON.
        for file in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
        }
    }
}

//! tracefs: mount it when missing, and read tracepoint field offsets from
//! each tracepoint's `format` file, so no context layout is hard-coded.

use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use monitor_common::TracepointOffsets;

/// Where tracefs is mounted on current systems.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older systems reach it (through debugfs).
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Errors finding tracefs or reading a tracepoint's format.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted and mounting it failed.
    #[error("tracefs is not mounted and mounting it at {path} failed")]
    MountTracefs {
        /// Mount point tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tracepoint's format file could not be read: the kernel lacks the tracepoint.
    #[error("the kernel has no tracepoint {category}:{name} ({path})")]
    ReadFormat {
        /// Tracepoint category.
        category: String,
        /// Tracepoint name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The format file lacks a field the programs read.
    #[error("tracepoint {category}:{name} has no field {field}")]
    FindTracepointField {
        /// Tracepoint category.
        category: String,
        /// Tracepoint name.
        name: String,
        /// The field.
        field: String,
    },
}

/// Returns the tracefs root, mounting tracefs at [`TRACEFS`] when neither
/// it nor the debugfs path is there.
///
/// # Errors
/// [`TracefsError::MountTracefs`] when tracefs is absent and cannot be mounted.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    let target = PathBuf::from(TRACEFS);
    let mount_err = |source| TracefsError::MountTracefs {
        path: target.clone(),
        source,
    };
    std::fs::create_dir_all(&target).map_err(mount_err)?;
    let source = CString::new("tracefs").expect("static string has no NUL");
    let fstype = source.clone();
    let dir = CString::new(TRACEFS).expect("static string has no NUL");
    // SAFETY: valid NUL-terminated strings; null data is allowed for tracefs.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(target)
}

/// Field name -> byte offset, parsed from a tracepoint `format` file.
///
/// Lines look like `\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;`;
/// the field name is the last word before `;` (array brackets removed).
#[must_use]
pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let Some(decl) = parts.next() else { continue };
        let Some(name) = decl.split_whitespace().last() else {
            continue;
        };
        let name = name
            .split('[')
            .next()
            .unwrap_or(name)
            .trim_start_matches('*');
        let offset = parts
            .map(str::trim)
            .find_map(|p| p.strip_prefix("offset:"))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(offset) = offset {
            fields.insert(name.to_owned(), offset);
        }
    }
    fields
}

struct Formats<'a> {
    root: &'a Path,
}

impl Formats<'_> {
    fn read(&self, category: &str, name: &str) -> Result<HashMap<String, u32>, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::ReadFormat {
            category: category.to_owned(),
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        Ok(parse_format(&text))
    }

    fn field(&self, category: &str, name: &str, field: &str) -> Result<u32, TracefsError> {
        self.read(category, name)?
            .get(field)
            .copied()
            .ok_or_else(|| TracefsError::FindTracepointField {
                category: category.to_owned(),
                name: name.to_owned(),
                field: field.to_owned(),
            })
    }
}

/// Reads every tracepoint field offset the programs use.
///
/// # Errors
/// The first tracepoint or field the kernel lacks.
pub fn tracepoint_offsets(root: &Path) -> Result<TracepointOffsets, TracefsError> {
    let f = Formats { root };
    Ok(TracepointOffsets {
        exec_filename: f.field("sched", "sched_process_exec", "filename")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT2: &str = "name: sys_enter_openat2\nID: 780\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:struct open_how * how;\toffset:32;\tsize:8;\tsigned:0;\n\
        \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
        \tfield:__data_loc char[] filename2;\toffset:8;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"dfd: 0x%08lx\"\n";

    #[test]
    fn parses_field_offsets() {
        let fields = parse_format(OPENAT2);
        assert_eq!(fields["filename"], 24);
        assert_eq!(fields["how"], 32);
        assert_eq!(fields["saddr_v6"], 40);
        assert_eq!(fields["filename2"], 8);
        assert_eq!(fields["common_type"], 0);
        assert!(!fields.contains_key("print"));
    }

    #[test]
    fn ignores_garbage() {
        assert!(parse_format("field:\nfield:int x;\toffset:zz;\n\u{0}").is_empty());
    }
}

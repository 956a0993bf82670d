//! Which files in the inbox are requests, and which of them are still waiting.

use crate::response;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Whether a file name is a request's (SPEC §4): ends in `.json`, does not start with
/// `.`, and is not a response. Temporary upload names (`x.json.part`, `.x.json`) fail.
pub fn is_request_name(name: &str) -> bool {
    name.ends_with(".json")
        && name.len() > ".json".len()
        && !name.starts_with('.')
        && !name.ends_with(".response.json")
}

/// Whether `path` is a request waiting to be processed: a regular file (symbolic links,
/// folders, FIFOs and devices are never opened) with a request's name and no response
/// beside it.
pub fn is_waiting(path: &Path) -> bool {
    // Lossy: a name that is not UTF-8 is still a request when its ASCII ends say so.
    let named = path
        .file_name()
        .is_some_and(|n| is_request_name(&n.to_string_lossy()));
    named
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
        && !response::response_path(path).exists()
}

/// The waiting requests of `dir`, in byte order of their names.
pub fn waiting(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if is_waiting(&path) {
            found.push(path);
        }
    }
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(found)
}

/// Removes the temporary files of responses whose writing a crash cut short. Their
/// responses are written again from the store's outbox.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".response.json.tmp") {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names() {
        for yes in ["a.json", "seed-request.json", "x.y.json"] {
            assert!(is_request_name(yes), "{yes}");
        }
        for no in [
            "a.response.json",
            ".a.json",
            "a.json.part",
            "a.json.filepart",
            "a.json.tmp",
            ".json",
            "a.JSON.txt",
        ] {
            assert!(!is_request_name(no), "{no}");
        }
    }
}

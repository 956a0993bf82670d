//! What the benchmarks share: measuring the binary they run (peak memory, the size of
//! a store on disk) and writing generated request files. Each bench target includes
//! this module and `examples/gen.rs` (as `generator`).

use super::generator;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// Waits for `child`, sampling its peak resident memory (KiB) every 5 ms.
pub fn wait_with_peak(child: &mut Child) -> (ExitStatus, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(hwm) = fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            peak = peak.max(hwm);
        }
        match child.try_wait().expect("wait for userdrop") {
            Some(status) => return (status, peak),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn write_request_file(path: &Path, first: u64, users: u64) {
    let mut out = BufWriter::new(fs::File::create(path).expect("create a request"));
    generator::write_request(&mut out, first, users).expect("write a request");
    out.flush().expect("write a request");
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Bytes the folder takes on disk (allocated blocks).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

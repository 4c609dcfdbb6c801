//! File helpers: bounded reads, atomic writes, and secret files created with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Reads a whole file, refusing one larger than `max_bytes`.
pub fn read_bounded(path: &Path, max_bytes: usize) -> Result<Vec<u8>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > max_bytes {
        bail!("{} is larger than {max_bytes} bytes", path.display());
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a rename), so a crash
/// never leaves half a file. `secret` files get mode 0600 from their creation.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    {
        let mut file =
            open_new(&tmp, secret).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes a new file, refusing to replace an existing one.
pub fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    if path.exists() {
        bail!(
            "{} already exists: refusing to overwrite it",
            path.display()
        );
    }
    write_atomic(path, bytes, secret)
}

/// A name beside `path` for writing it before a rename: hidden, unique to this process and
/// moment, so nothing anyone planted under a predictable name is written through.
pub fn partial_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nonce: u64 = rand::random();
    path.with_file_name(format!(
        ".{name}.partial-{}-{nonce:016x}",
        std::process::id()
    ))
}

/// Creates a new file, failing if anything exists at `path` (a symbolic link included: it is
/// never followed). `secret` files get mode 0600 from their creation.
pub fn create_new(path: &Path, secret: bool) -> std::io::Result<fs::File> {
    open_new(path, secret)
}

fn open_new(path: &Path, secret: bool) -> std::io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let _ = secret;
    options.open(path)
}

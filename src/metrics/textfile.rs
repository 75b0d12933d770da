//! `run --metrics-file`: the run's metrics for node_exporter's textfile
//! collector, written so that a scrape never reads half a file.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Fails (one line) unless the file's directory exists, so a typo is found
/// before the run rather than after it.
pub fn check_dir(path: &Path) -> Result<()> {
    let dir = parent(path);
    anyhow::ensure!(
        dir.is_dir(),
        "--metrics-file {}: the directory {} does not exist",
        path.display(),
        dir.display()
    );
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `text` to a temporary file beside `path`, flushes it to disk and
/// renames it over `path`: the collector sees the old file or the new one,
/// never a torn one. (The temporary name does not end in `.prom`, so the
/// collector ignores it meanwhile.)
pub fn write(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--metrics-file {}: not a file name", path.display()))?;
    let tmp = parent(path).join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let attempt = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = attempt {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("could not write --metrics-file {}: {e}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_refuses_a_missing_directory() {
        let dir = std::env::temp_dir().join(format!("matchmaker-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("matchmaker.prom");
        write(&path, "a 1\n").expect("first write");
        write(&path, "a 2\n").expect("second write");
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "a 2\n");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        assert!(check_dir(&dir.join("nope").join("x.prom")).is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}

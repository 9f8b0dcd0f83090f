//! Resolving user-supplied paths safely inside a root directory.
//!
//! Used for `--import-root` (bulk-load by path) and `--images-dir` (image
//! serving). A path is accepted only when its canonical form (symlinks
//! resolved) lies inside the canonical root, so `..`, absolute paths that
//! point elsewhere and symlinks out of the root are all refused.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path is empty or contains a NUL byte or an encoded separator.
    #[error("invalid path {0:?}")]
    Invalid(String),
    /// The path resolves outside the allowed root.
    #[error("path {0:?} is outside the allowed directory")]
    OutsideRoot(String),
    /// The path does not exist.
    #[error("path {0:?} does not exist")]
    NotFound(String),
}

/// Resolves `user` (absolute, or relative to `root`) to a canonical path that
/// exists and lies inside `root`.
pub fn resolve_inside(root: &Path, user: &str) -> Result<PathBuf, PathError> {
    if user.is_empty() || user.contains('\0') {
        return Err(PathError::Invalid(user.to_string()));
    }
    let lower = user.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%2e")
        || user.contains('\\')
    {
        return Err(PathError::Invalid(user.to_string()));
    }
    let given_root = root;
    let root = root
        .canonicalize()
        .map_err(|_| PathError::NotFound(root.display().to_string()))?;
    let candidate = Path::new(user);
    let joined = if candidate.is_absolute() {
        // Refused lexically when it is not spelled under the root (as given or canonical), so
        // that a missing file elsewhere answers exactly like an existing one: the answer must
        // not tell which files exist outside the root.
        if !(candidate.starts_with(&root) || candidate.starts_with(given_root))
            || candidate
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(PathError::OutsideRoot(user.to_string()));
        }
        candidate.to_path_buf()
    } else {
        // Refuse `..` lexically before touching the file system, so that a
        // missing file outside the root does not answer differently from a
        // missing file inside it.
        if candidate
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(PathError::OutsideRoot(user.to_string()));
        }
        root.join(candidate)
    };
    let canonical = joined
        .canonicalize()
        .map_err(|_| PathError::NotFound(user.to_string()))?;
    if !canonical.starts_with(&root) {
        return Err(PathError::OutsideRoot(user.to_string()));
    }
    Ok(canonical)
}

/// `path` as shown to a client: relative to `root` when it lies inside it, so answers never
/// spell out the server's own directory layout; else its file name alone.
pub fn relative_to(root: &Path, path: &Path) -> String {
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    path.strip_prefix(root)
        .or_else(|_| path.strip_prefix(&canonical_root))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| {
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes_and_accepts_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();

        let ok = resolve_inside(&root, "sub/a.jpg").unwrap();
        assert!(ok.ends_with("sub/a.jpg"));
        let abs = root.join("sub/a.jpg");
        assert!(resolve_inside(&root, abs.to_str().unwrap()).is_ok());

        assert!(matches!(
            resolve_inside(&root, "../secret"),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_inside(&root, dir.path().join("secret").to_str().unwrap()),
            Err(PathError::OutsideRoot(_))
        ));
        #[cfg(unix)]
        assert!(matches!(
            resolve_inside(&root, "link"),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_inside(&root, "sub%2f..%2f..%2fsecret"),
            Err(PathError::Invalid(_))
        ));
        assert!(matches!(
            resolve_inside(&root, "nope.jpg"),
            Err(PathError::NotFound(_))
        ));
        // Outside the root, an existing and a missing file get the same answer.
        let missing = dir.path().join("no-such-file");
        assert_eq!(
            resolve_inside(&root, missing.to_str().unwrap()),
            Err(PathError::OutsideRoot(missing.display().to_string()))
        );
        assert!(matches!(
            resolve_inside(&root, "/etc/passwd"),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_inside(&root, "/no/such/dir/passwd"),
            Err(PathError::OutsideRoot(_))
        ));
        let dotdot = format!("{}/sub/../../secret", root.display());
        assert!(matches!(
            resolve_inside(&root, &dotdot),
            Err(PathError::OutsideRoot(_))
        ));
        assert!(matches!(
            resolve_inside(&root, ""),
            Err(PathError::Invalid(_))
        ));
    }
}

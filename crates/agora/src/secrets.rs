//! Secrets at rest: the data directory and everything in it are the owner's alone.
//!
//! `agora up` creates its data directory 0700 and every file in it 0600 before any
//! store opens it (SQLite gives a database's WAL and shared-memory files the mode of
//! the database file): the stores, the bus, the internal-plane key and the admin
//! password. A directory or file that already exists with looser modes is left as it
//! is, with a warning at start naming it.

use std::path::Path;

use anyhow::Context;

/// The deployment's internal-plane key (hex seed), in the data or secret directory.
pub const INTERNAL_KEY_FILE: &str = "internal-key";

/// A deployment's secrets, as `agora run` reads them from `AGORA_SECRET_DIR`.
pub struct Secrets {
    pub internal: agora_auth::InternalKey,
    /// The admin's password, if the directory holds one.
    pub admin_password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// Reads the secrets `agora secrets init` wrote into `dir`. The internal key must
    /// be there: every service of a deployment needs the same one, so none invents it.
    pub fn load(dir: &Path) -> anyhow::Result<Secrets> {
        let key = dir.join(INTERNAL_KEY_FILE);
        if !key.exists() {
            anyhow::bail!(
                "{} holds no {INTERNAL_KEY_FILE}: write the deployment's secrets once with `agora secrets init {}`",
                dir.display(),
                dir.display()
            );
        }
        let internal = agora_auth::InternalKey::load(&key)
            .with_context(|| format!("the internal-plane key in {}", dir.display()))?;
        let admin_password =
            match std::fs::read_to_string(dir.join(agora_identity::ADMIN_PASSWORD_FILE)) {
                Ok(text) => Some(text.trim().to_owned()).filter(|p| !p.is_empty()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(error).context("read the admin password"),
            };
        Ok(Secrets {
            internal,
            admin_password,
        })
    }

    /// Writes a deployment's secrets into `dir` (created 0700, files 0600): the
    /// internal-plane key and the admin's password (`admin_password`, or a generated
    /// one). Never overwrites: what exists is kept. Returns the files it wrote.
    pub fn init(
        dir: &Path,
        admin_password: Option<&str>,
    ) -> anyhow::Result<Vec<std::path::PathBuf>> {
        prepare_data_dir(dir)?;
        let mut written = Vec::new();
        let key = dir.join(INTERNAL_KEY_FILE);
        if !key.exists() {
            agora_auth::InternalKey::load_or_create(&key)
                .context("write the internal-plane key")?;
            written.push(key);
        }
        let password = dir.join(agora_identity::ADMIN_PASSWORD_FILE);
        if !password.exists() {
            let text =
                admin_password.map_or_else(agora_identity::generate_admin_password, str::to_owned);
            write_new_private(&password, &text)?;
            written.push(password);
        }
        Ok(written)
    }
}

/// Writes `contents` to the new file `path`, readable and writable by its owner only.
fn write_new_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

/// Creates `dir` (and its parents) 0700 if it does not exist; warns if it exists
/// readable or writable by others, and about each file in it that is.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .with_context(|| format!("create the data directory {}", dir.display()))?;
    }
    for loose in loose_entries(dir)? {
        tracing::warn!(
            path = %loose.display(),
            "readable or writable by other users: secrets and stores should be the owner's only (chmod 700 the directory, 600 its files)"
        );
    }
    Ok(())
}

/// `dir` and the files in it whose modes let other users in.
pub fn loose_entries(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut loose = Vec::new();
    if is_loose(dir)? {
        loose.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && is_loose(&path)? {
            loose.push(path);
        }
    }
    Ok(loose)
}

#[cfg(unix)]
fn is_loose(path: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("read the mode of {}", path.display()))?
        .permissions()
        .mode();
    Ok(mode & 0o077 != 0)
}

#[cfg(not(unix))]
fn is_loose(_path: &Path) -> anyhow::Result<bool> {
    Ok(false)
}

/// Creates the empty file `path` readable and writable by its owner only, unless it
/// exists (then it is left as it is).
pub fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("create {}", path.display())),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_and_its_files_are_the_owners_only() {
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("data");
        prepare_data_dir(&dir).expect("created");
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("a.db");
        create_private(&file).expect("created");
        assert_eq!(mode(&file), 0o600);
        assert!(loose_entries(&dir).expect("read").is_empty());
    }

    #[test]
    fn secrets_are_written_once_and_read_back() {
        let root = tempfile::tempdir().expect("dir");
        let dir = root.path().join("secrets");
        assert!(Secrets::load(&dir).is_err(), "nothing there yet");
        let written = Secrets::init(&dir, None).expect("init");
        assert_eq!(written.len(), 2);
        assert_eq!(mode(&dir), 0o700);
        for file in &written {
            assert_eq!(mode(file), 0o600);
        }
        let first = Secrets::load(&dir).expect("load");
        let password = first.admin_password.clone().expect("a password");
        assert_eq!(password.len(), 24);
        assert!(
            Secrets::init(&dir, Some("another"))
                .expect("again")
                .is_empty()
        );
        let again = Secrets::load(&dir).expect("load");
        assert_eq!(again.admin_password, Some(password), "never overwritten");
        assert_eq!(again.internal.to_hex(), first.internal.to_hex());
    }

    #[test]
    fn looser_modes_are_found_and_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let file = dir.path().join("bus.db");
        std::fs::write(&file, b"").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        create_private(&file).expect("exists: fine");
        prepare_data_dir(dir.path()).expect("warns only");
        assert_eq!(
            loose_entries(dir.path()).expect("read"),
            vec![dir.path().to_path_buf(), file.clone()]
        );
        assert_eq!(mode(&file), 0o644, "left as it was");
    }
}

//! The admin user, created on first start.

use std::path::Path;

use agora_contracts::Role;
use agora_messaging::Outbox;
use rand::Rng;
use uuid::Uuid;

use crate::domain::{Email, Name, Password};
use crate::{Error, IdentityConfig, password, store};

pub const ADMIN_EMAIL: &str = "admin@agora.local";

/// The file, in the data directory, that holds a generated admin password (mode 0600).
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// Creates the admin unless it exists. Its password is `config.admin_password` or, when
/// unset, generated, written to `<data_dir>/admin-password` (0600) and printed once to
/// stdout — the one place a password is shown, on purpose, to the operator.
pub async fn bootstrap(
    db: &agora_messaging::Db,
    config: &IdentityConfig,
    hasher: &password::Hasher,
) -> Result<(), Error> {
    let email = Email::parse(ADMIN_EMAIL)?;
    if store::user_by_email(db, email.as_str()).await?.is_some() {
        return Ok(());
    }
    let (password, generated) = match &config.admin_password {
        Some(given) => (
            Password::parse(given)
                .map_err(|invalid| Error::Config(format!("AGORA_ADMIN_PASSWORD {}", invalid.0)))?,
            false,
        ),
        None => (Password::parse(&generate_password())?, true),
    };
    let path = config.data_dir.join(ADMIN_PASSWORD_FILE);
    if generated {
        // Written before the user is committed: a crash in between leaves a file whose
        // password is replaced on the next start, never an admin nobody can sign in as.
        write_private(&path, password.expose()).await?;
    }
    let hash = hasher.hash(password.clone()).await?;
    let id = Uuid::now_v7();
    let name = Name::parse("Administrator")?;
    let now = time::OffsetDateTime::now_utc();
    let mut tx = db.begin().await?;
    let inserted = store::create_user(
        &mut tx,
        &store::NewUser {
            id,
            email: email.as_str(),
            name: name.as_str(),
            password_hash: &hash,
            role: Role::Admin,
            now,
        },
    )
    .await?;
    if !inserted {
        // Another process created it first.
        tx.rollback().await?;
        return Ok(());
    }
    Outbox::new(db).commit(tx).await?;
    tracing::info!(user_id = %id, "admin user created");
    if generated {
        println!(
            "identity: created {ADMIN_EMAIL} with the generated password {} (also in {})",
            password.expose(),
            path.display()
        );
    }
    Ok(())
}

/// A new admin password: 24 characters from 62, about 143 bits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

async fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await.map_err(io)?;
    // A file that existed keeps its mode through `open`: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(io)?;
    }
    use tokio::io::AsyncWriteExt;
    file.write_all(format!("{contents}\n").as_bytes())
        .await
        .map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}

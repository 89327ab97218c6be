//! The store handle: backends, migrations.

use agora_messaging::{Backend, Db, Error, Migration};

use crate::support::TestStore;

crate::on_both_backends!(migrations_are_idempotent_and_versioned, knows_its_backend);

#[tokio::test]
async fn a_postgres_url_sizes_the_pool() {
    let Some(database) = agora_testkit::PgDatabase::create().await else {
        return;
    };
    let url = database.url();
    let default = Db::connect(url).await.unwrap();
    assert_eq!(default.pool().options().get_max_connections(), 10);
    let sized = Db::connect(&format!("{url}?pool_max_conns=3&application_name=ordering"))
        .await
        .unwrap();
    assert_eq!(sized.pool().options().get_max_connections(), 3);
    let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
        .fetch_one(sized.pool())
        .await
        .unwrap();
    assert_eq!(name, "ordering", "the other parameters are kept");
    for bad in ["0", "-1", "many", ""] {
        let error = Db::connect(&format!("{url}?pool_max_conns={bad}"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{bad}: {error}");
    }
    default.close().await;
    sized.close().await;
}

async fn migrations_are_idempotent_and_versioned(store: TestStore) {
    // TestStore::open migrated once already.
    let before = store.db.migrations_applied();
    store.db.migrate_messaging().await.unwrap();
    assert_eq!(
        store.db.migrations_applied(),
        before,
        "nothing left to apply"
    );
    let again = Db::connect(&store.url).await.unwrap();
    again.migrate_messaging().await.unwrap();
    assert_eq!(again.migrations_applied(), 0);

    let widgets = [
        Migration {
            version: 1,
            description: "widgets",
            sqlite: "CREATE TABLE widgets (id INTEGER PRIMARY KEY)",
            postgres: "CREATE TABLE widgets (id BIGINT PRIMARY KEY)",
        },
        Migration {
            version: 2,
            description: "widget names",
            sqlite: "ALTER TABLE widgets ADD COLUMN name TEXT; CREATE INDEX widgets_name ON widgets (name)",
            postgres: "ALTER TABLE widgets ADD COLUMN name TEXT; CREATE INDEX widgets_name ON widgets (name)",
        },
    ];
    store.db.migrate("widgets", &widgets[..1]).await.unwrap();
    store.db.migrate("widgets", &widgets).await.unwrap();
    again.migrate("widgets", &widgets).await.unwrap();
    // The count says what this start changed: the two widget migrations, none twice.
    assert_eq!(store.db.migrations_applied(), before + 2);
    assert_eq!(again.migrations_applied(), 0);
    sqlx::query("INSERT INTO widgets (id, name) VALUES ($1, $2)")
        .bind(1_i64)
        .bind("sprocket")
        .execute(store.db.pool())
        .await
        .unwrap();
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM agora_migrations WHERE component = $1 ORDER BY version",
    )
    .bind("widgets")
    .fetch_all(store.db.pool())
    .await
    .unwrap();
    assert_eq!(versions, [1, 2]);
}

async fn knows_its_backend(store: TestStore) {
    let expected = if store.url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(store.db.backend(), expected);
}

#[tokio::test]
async fn sqlite_file_and_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/service.db");
    let db = Db::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    db.migrate_messaging().await.unwrap();
    assert!(path.is_file());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(foreign_keys, 1);
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    db.migrate_messaging().await.unwrap();
    db.migrate_messaging().await.unwrap();
}

#[tokio::test]
async fn other_schemes_are_refused_without_echoing_the_url() {
    let error = Db::connect("mysql://root:hunter2@localhost/shop")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnsupportedUrl(_)), "{error}");
    assert!(!error.to_string().contains("hunter2"));
}

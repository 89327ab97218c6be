//! Messaging's own tables, per backend.

use crate::db::Migration;

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "outbox and inbox",
    sqlite: "
        -- AUTOINCREMENT: positions never go back, even after published rows are pruned.
        CREATE TABLE messaging_outbox (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            headers TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            published_at_ms INTEGER
        );
        CREATE INDEX messaging_outbox_unpublished
            ON messaging_outbox (position) WHERE published_at_ms IS NULL;
        CREATE TABLE messaging_inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            processed_at_ms INTEGER NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );
        CREATE INDEX messaging_inbox_processed ON messaging_inbox (processed_at_ms);
    ",
    postgres: "
        CREATE TABLE messaging_outbox (
            position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            headers TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            published_at_ms BIGINT
        );
        CREATE INDEX messaging_outbox_unpublished
            ON messaging_outbox (position) WHERE published_at_ms IS NULL;
        CREATE TABLE messaging_inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            processed_at_ms BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );
        CREATE INDEX messaging_inbox_processed ON messaging_inbox (processed_at_ms);
    ",
}];

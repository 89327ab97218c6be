//! Messaging's own tables, per backend.

use crate::db::Migration;

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        description: "the outbox as the owner's event feed",
        // `feed_position` numbers published events in the order they were published
        // (the relay assigns it while it holds the outbox), 1, 2, 3…: what
        // `/internal/<service>/events` pages through. Rows published before this
        // migration are numbered in position order.
        sqlite: "
            ALTER TABLE messaging_outbox ADD COLUMN feed_position INTEGER;
            UPDATE messaging_outbox SET feed_position = numbered.n
            FROM (SELECT position, ROW_NUMBER() OVER (ORDER BY position) AS n
                  FROM messaging_outbox WHERE published_at_ms IS NOT NULL) AS numbered
            WHERE messaging_outbox.position = numbered.position;
            CREATE UNIQUE INDEX messaging_outbox_feed
                ON messaging_outbox (feed_position) WHERE feed_position IS NOT NULL;
            -- How far a consumer catching up from an owner's feed got.
            CREATE TABLE messaging_feed_cursors (
                consumer TEXT PRIMARY KEY,
                position INTEGER NOT NULL,
                done INTEGER NOT NULL
            );
        ",
        postgres: "
            ALTER TABLE messaging_outbox ADD COLUMN feed_position BIGINT;
            UPDATE messaging_outbox SET feed_position = numbered.n
            FROM (SELECT position, ROW_NUMBER() OVER (ORDER BY position) AS n
                  FROM messaging_outbox WHERE published_at_ms IS NOT NULL) AS numbered
            WHERE messaging_outbox.position = numbered.position;
            CREATE UNIQUE INDEX messaging_outbox_feed
                ON messaging_outbox (feed_position) WHERE feed_position IS NOT NULL;
            -- How far a consumer catching up from an owner's feed got.
            CREATE TABLE messaging_feed_cursors (
                consumer TEXT PRIMARY KEY,
                position BIGINT NOT NULL,
                done BIGINT NOT NULL
            );
        ",
    },
];

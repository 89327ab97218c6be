//! Ordering's replicas of customer and catalog data: given these events, when this one
//! arrives, then the replica holds this. Duplicates and reordering never regress them;
//! a rebuild from the start of the streams converges to what live delivery built.

use std::sync::Arc;

use agora_bus::{Bus, SharedBus};
use agora_contracts::{
    CustomerAddressChanged, CustomerRegistered, PaymentMethod, PaymentMethodChanged, ProductAdded,
    ProductDeleted, ProductUpdated,
};
use agora_messaging::{CatchUp, Db, Envelope, Outbox, Relay, RelayConfig};
use agora_ordering::{Ordering, ReplicaSnapshot};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::support::{
    Backend, address, address_changed, apply, envelope, eventually, payment_method_changed,
    product_added, start,
};

crate::on_both_backends!(
    an_older_address_arriving_late_changes_nothing,
    duplicated_address_events_apply_once,
    field_groups_keep_their_own_versions,
    a_deleted_product_stays_deleted,
    the_bus_feeds_the_replicas,
    a_rebuild_from_the_start_equals_live_delivery,
    two_instances_rebuild_once,
    an_instance_follows_a_rebuild_by_another,
    a_rebuild_catches_up_from_the_owners_feeds,
);

async fn customer(ordering: &Ordering, id: Uuid) -> agora_ordering::CustomerReplica {
    ordering
        .replica_snapshot()
        .await
        .unwrap()
        .customers
        .into_iter()
        .find(|c| c.customer_id == id)
        .expect("the customer is replicated")
}

async fn an_older_address_arriving_late_changes_nothing(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let id = Uuid::now_v7();
    // Given version 3 of the address,
    apply(&ordering, &[address_changed(id, "New St 3", 3)]).await;
    // when version 2 arrives late,
    apply(&ordering, &[address_changed(id, "Old St 2", 2)]).await;
    // then the replica keeps version 3, with its own changed_at.
    let replica = customer(&ordering, id).await;
    assert_eq!(replica.address, Some(address("New St 3")));
    assert_eq!(replica.address_version, 3);
    assert_eq!(
        replica.address_as_of.as_deref(),
        Some("2023-11-14T22:13:23Z")
    );
    ordering.shutdown().await;
}

async fn duplicated_address_events_apply_once(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let id = Uuid::now_v7();
    let v2 = address_changed(id, "Second 2", 2);
    let v4 = address_changed(id, "Fourth 4", 4);
    // Given v2, v4, and then both again, shuffled,
    apply(
        &ordering,
        &[v2.clone(), v4.clone(), v2.clone(), v4.clone(), v2],
    )
    .await;
    // then v4 holds.
    let replica = customer(&ordering, id).await;
    assert_eq!(replica.address, Some(address("Fourth 4")));
    assert_eq!(replica.address_version, 4);
    ordering.shutdown().await;
}

async fn field_groups_keep_their_own_versions(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let id = Uuid::now_v7();
    // One counter per customer: registered (1), address (2), payment method (3). Given
    // the payment method at 3 and the registration,
    apply(
        &ordering,
        &[
            payment_method_changed(id, "tok_visa", 3),
            envelope(&CustomerRegistered {
                customer_id: id,
                name: "Ada".into(),
                email: "ada@example.org".into(),
                registered_at: OffsetDateTime::now_utc(),
                version: 1,
            }),
        ],
    )
    .await;
    // when the address at 2 arrives (older than the payment method's version),
    apply(&ordering, &[address_changed(id, "Main St 1", 2)]).await;
    // then it is applied: it is newer than the address the replica had (none).
    let replica = customer(&ordering, id).await;
    assert_eq!(replica.address, Some(address("Main St 1")));
    assert_eq!(replica.address_version, 2);
    assert_eq!(
        replica.payment_method,
        Some(PaymentMethod {
            token: "tok_visa".into(),
            last4: "4242".into()
        })
    );
    assert_eq!(replica.payment_method_version, 3);
    assert_eq!(replica.name.as_deref(), Some("Ada"));
    assert_eq!(replica.profile_version, 1);

    // And an older payment method (from before the address) changes nothing.
    apply(&ordering, &[payment_method_changed(id, "tok_declined", 1)]).await;
    let replica = customer(&ordering, id).await;
    assert_eq!(replica.payment_method.unwrap().token, "tok_visa");
    ordering.shutdown().await;
}

async fn a_deleted_product_stays_deleted(backend: Backend) {
    let Some((_env, ordering)) = start(backend).await else {
        return;
    };
    let id = Uuid::now_v7();
    let deleted = envelope(&ProductDeleted {
        product_id: id,
        deleted_at: OffsetDateTime::now_utc(),
        version: 3,
    });
    let updated = envelope(&ProductUpdated {
        product_id: id,
        name: "Lamp II".into(),
        description: String::new(),
        image_url: None,
        updated_at: OffsetDateTime::now_utc(),
        version: 2,
    });
    // Given the delete (a tombstone at 3), when the add and the update arrive late,
    apply(&ordering, &[deleted, product_added(id, "Lamp", 1), updated]).await;
    // then the product stays deleted.
    let snapshot = ordering.replica_snapshot().await.unwrap();
    let product = snapshot
        .products
        .iter()
        .find(|p| p.product_id == id)
        .unwrap();
    assert!(product.deleted);
    assert_eq!(product.version, 3);
    assert_eq!(product.name, None);
    ordering.shutdown().await;
}

/// Customer and catalog events with duplicates and reordering, as a bus may deliver.
fn history(customer: Uuid, lamp: Uuid, chair: Uuid) -> Vec<Envelope> {
    let address3 = address_changed(customer, "Third 3", 3);
    vec![
        envelope(&CustomerRegistered {
            customer_id: customer,
            name: "Ada".into(),
            email: "ada@example.org".into(),
            registered_at: OffsetDateTime::now_utc(),
            version: 1,
        }),
        address3.clone(),
        address_changed(customer, "Second 2", 2),
        envelope(&PaymentMethodChanged {
            customer_id: customer,
            payment_method: PaymentMethod {
                token: "tok_visa".into(),
                last4: "4242".into(),
            },
            changed_at: OffsetDateTime::now_utc(),
            version: 4,
        }),
        address3,
        product_added(lamp, "Lamp", 1),
        envelope(&ProductUpdated {
            product_id: lamp,
            name: "Desk lamp".into(),
            description: String::new(),
            image_url: None,
            updated_at: OffsetDateTime::now_utc(),
            version: 2,
        }),
        envelope(&ProductAdded {
            product_id: chair,
            name: "Chair".into(),
            description: String::new(),
            image_url: None,
            added_at: OffsetDateTime::now_utc(),
            version: 1,
        }),
        envelope(&ProductDeleted {
            product_id: chair,
            deleted_at: OffsetDateTime::now_utc(),
            version: 2,
        }),
    ]
}

fn converged(snapshot: &ReplicaSnapshot, customer: Uuid, lamp: Uuid, chair: Uuid) -> bool {
    let customer_done = snapshot.customers.iter().any(|c| {
        c.customer_id == customer && c.address_version == 3 && c.payment_method_version == 4
    });
    let lamp_done = snapshot
        .products
        .iter()
        .any(|p| p.product_id == lamp && p.version == 2);
    let chair_done = snapshot
        .products
        .iter()
        .any(|p| p.product_id == chair && p.deleted);
    customer_done && lamp_done && chair_done
}

async fn the_bus_feeds_the_replicas(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (customer, lamp, chair) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for event in history(customer, lamp, chair) {
        env.bus.publish(event.to_message().unwrap()).await.unwrap();
    }
    eventually("the replicas to converge", || async {
        converged(
            &ordering.replica_snapshot().await.unwrap(),
            customer,
            lamp,
            chair,
        )
    })
    .await;
    let snapshot = ordering.replica_snapshot().await.unwrap();
    let replica = snapshot
        .customers
        .iter()
        .find(|c| c.customer_id == customer)
        .unwrap();
    assert_eq!(replica.address, Some(address("Third 3")));
    let names: Vec<_> = snapshot.products.iter().map(|p| p.name.clone()).collect();
    assert!(names.contains(&Some("Desk lamp".to_owned())));
    ordering.shutdown().await;
}

async fn a_rebuild_from_the_start_equals_live_delivery(backend: Backend) {
    let Some((env, ordering)) = start(backend).await else {
        return;
    };
    let (customer, lamp, chair) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for event in history(customer, lamp, chair) {
        env.bus.publish(event.to_message().unwrap()).await.unwrap();
    }
    eventually("live delivery to converge", || async {
        converged(
            &ordering.replica_snapshot().await.unwrap(),
            customer,
            lamp,
            chair,
        )
    })
    .await;
    let live = ordering.replica_snapshot().await.unwrap();

    let generation = ordering.rebuild_replicas().await.unwrap();
    assert_eq!(generation, 1);
    // The generation-0 consumer is gone from the bus: opened again under its name, it
    // starts over from the first message instead of resuming after what it had acked.
    let (old, _) = agora_ordering::consumer_names(0);
    assert_eq!(agora_ordering::consumer_names(1).0, "ordering-customers-g1");
    let reopened = env
        .bus
        .consumer(&agora_bus::ConsumerConfig::new("CUSTOMER", old.clone()))
        .await
        .unwrap();
    let redelivered = reopened
        .fetch(100, std::time::Duration::from_millis(200))
        .await
        .unwrap();
    // Four customer messages: the duplicate of address v3 has the same message id,
    // which the bus deduplicates at publish.
    assert_eq!(redelivered.len(), 4);
    drop(redelivered);
    env.bus.delete_consumer("CUSTOMER", &old).await.unwrap();
    eventually("the replay to converge", || async {
        ordering.replica_snapshot().await.unwrap() == live
    })
    .await;
    // A customer event published after the rebuild reaches the new consumers too.
    let later = envelope(&CustomerAddressChanged {
        customer_id: customer,
        address: address("Fifth 5"),
        changed_at: OffsetDateTime::now_utc(),
        version: 5,
    });
    env.bus.publish(later.to_message().unwrap()).await.unwrap();
    eventually("the new event to arrive", || async {
        let snapshot = ordering.replica_snapshot().await.unwrap();
        snapshot
            .customers
            .iter()
            .any(|c| c.customer_id == customer && c.address_version == 5)
    })
    .await;
    ordering.shutdown().await;

    // A restart keeps the generation's consumers (no second replay from scratch).
    let ordering = env.start().await;
    let snapshot = ordering.replica_snapshot().await.unwrap();
    assert_eq!(snapshot.customers.len(), 1);
    assert_eq!(snapshot.customers[0].address_version, 5);
    ordering.shutdown().await;
}

/// Two instances on one store, both asked to rebuild (both found it empty at start):
/// the second finds the generation moved by the first and joins it instead of
/// rebuilding again (which would delete the consumers the first one runs).
async fn two_instances_rebuild_once(backend: Backend) {
    let Some((env, first)) = start(backend).await else {
        return;
    };
    let second = env.start().await;
    let (customer, lamp, chair) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for event in history(customer, lamp, chair) {
        env.bus.publish(event.to_message().unwrap()).await.unwrap();
    }

    assert_eq!(first.rebuild_replicas().await.unwrap(), 1);
    assert_eq!(
        second.rebuild_replicas().await.unwrap(),
        1,
        "joined, not rebuilt"
    );
    assert_eq!(second.replica_generation().await, Some(1));
    let names: Vec<String> = env
        .bus
        .consumers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .filter(|name| name.starts_with("ordering-customers"))
        .collect();
    assert_eq!(names, ["ordering-customers-g1"]);
    eventually("the replicas to converge", || async {
        converged(
            &first.replica_snapshot().await.unwrap(),
            customer,
            lamp,
            chair,
        )
    })
    .await;
    tokio::join!(first.shutdown(), second.shutdown());
}

/// One instance rebuilds; the other, which did not ask, stops its consumers of the old
/// generation (deleted by the rebuild) and joins the new one by itself, so the
/// replicas keep following the streams whichever instance's consumers get the events.
async fn an_instance_follows_a_rebuild_by_another(backend: Backend) {
    let Some((env, first)) = start(backend).await else {
        return;
    };
    let second = env.start().await;
    assert_eq!(second.replica_generation().await, Some(0));
    let (customer, lamp, chair) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for event in history(customer, lamp, chair) {
        env.bus.publish(event.to_message().unwrap()).await.unwrap();
    }

    assert_eq!(first.rebuild_replicas().await.unwrap(), 1);
    eventually("the other instance to join generation 1", || async {
        second.replica_generation().await == Some(1)
    })
    .await;
    let names: Vec<String> = env
        .bus
        .consumers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .filter(|name| name.starts_with("ordering-customers"))
        .collect();
    assert_eq!(names, ["ordering-customers-g1"]);
    eventually("the replicas to converge", || async {
        converged(
            &second.replica_snapshot().await.unwrap(),
            customer,
            lamp,
            chair,
        )
    })
    .await;
    tokio::join!(first.shutdown(), second.shutdown());
}

/// An owner's store with its events published, but not on the shop's bus: history the
/// streams no longer hold (a new bus, or events past the streams' retention).
async fn owner_with_history(dir: &std::path::Path, name: &str, events: &[Envelope]) -> Db {
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.join(format!("{name}.db")).display()
    ))
    .await
    .unwrap();
    db.migrate_messaging().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for event in events.iter().filter(|e| seen.insert(e.id)) {
        Outbox::append(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
    let elsewhere = agora_bus::embedded::EmbeddedBus::open(dir.join(format!("{name}-bus.db")))
        .await
        .unwrap();
    elsewhere
        .ensure_stream(&agora_messaging::stream_config(name))
        .await
        .unwrap();
    let published = Relay::publish_pending(&db, &(Arc::new(elsewhere) as SharedBus), 100)
        .await
        .unwrap();
    assert_eq!(published, seen.len());
    db
}

/// A rebuild with the owners' feeds gets the history the streams do not hold, and meets
/// the bus without a gap (an event published after it arrives) or a double (each event
/// applied once, though the newest came both ways).
async fn a_rebuild_catches_up_from_the_owners_feeds(backend: Backend) {
    let Some(env) = crate::support::Env::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ada, lamp, chair) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (customer_events, catalog_events): (Vec<_>, Vec<_>) = history(ada, lamp, chair)
        .into_iter()
        .partition(|e| e.source == "customer");
    let customers = owner_with_history(dir.path(), "customer", &customer_events).await;
    let catalog = owner_with_history(dir.path(), "catalog", &catalog_events).await;
    let config = agora_ordering::OrderingConfig {
        feeds: Some(agora_ordering::ReplicaFeeds {
            customer: Arc::new(Outbox::new(&customers)),
            catalog: Arc::new(Outbox::new(&catalog)),
        }),
        ..env.config()
    };
    let ordering = agora_ordering::build(config.clone()).await.unwrap();
    assert_eq!(env.bus.last_sequence("CUSTOMER").await.unwrap_or(0), 0);

    assert_eq!(ordering.rebuild_replicas().await.unwrap(), 1);
    eventually("the replicas to converge from the feeds", || async {
        converged(
            &ordering.replica_snapshot().await.unwrap(),
            ada,
            lamp,
            chair,
        )
    })
    .await;

    // Customer goes on publishing, now on the shop's bus: the event is in its feed too.
    let relay = Relay::spawn(
        &customers,
        env.bus.clone() as SharedBus,
        RelayConfig {
            streams: vec![agora_messaging::stream_config("customer")],
            ..RelayConfig::default()
        },
    );
    let later = address_changed(ada, "Fifth 5", 5);
    let mut tx = customers.begin().await.unwrap();
    Outbox::append(&mut tx, &later).await.unwrap();
    Outbox::new(&customers).commit(tx).await.unwrap();
    eventually("the new event to arrive", || async {
        customer(&ordering, ada).await.address_version == 5
    })
    .await;
    let (consumer, _) = agora_ordering::consumer_names(1);
    eventually("the feed read to its end", || async {
        CatchUp::state(ordering.db(), &consumer).await.unwrap().done
    })
    .await;
    let processed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messaging_inbox WHERE consumer = $1")
            .bind(&consumer)
            .fetch_one(ordering.db().pool())
            .await
            .unwrap();
    assert_eq!(
        processed, 5,
        "four old customer events and the new one, once each"
    );
    relay.shutdown().await;
    ordering.shutdown().await;

    // A restart runs the generation's consumers; the catch-up is done, not redone.
    let ordering = agora_ordering::build(config).await.unwrap();
    assert_eq!(ordering.replica_generation().await, Some(1));
    assert_eq!(customer(&ordering, ada).await.address_version, 5);
    ordering.shutdown().await;
}

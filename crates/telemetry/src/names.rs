//! Every metric family Agora exports, in one place: the recording code, the docs, the
//! dashboard check and the exposition test all read this list.

/// How a family is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported family: its name (as exposed), kind, labels and help text.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

macro_rules! families {
    ($($const:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(pub const $const: &str = $name;)*
        /// Every family, in the order the README lists them.
        pub const FAMILIES: &[Family] = &[
            $(Family { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

families! {
    HTTP_SERVER_REQUESTS = "agora_http_server_requests_total", Counter,
        ["service", "route", "method", "status"],
        "HTTP requests answered by a service, by route template and status.";
    HTTP_SERVER_DURATION = "agora_http_server_request_duration_seconds", Histogram,
        ["service", "route", "method"],
        "Time a service took to answer, by route template.";
    HTTP_CLIENT_REQUESTS = "agora_http_client_requests_total", Counter,
        ["service", "target", "route", "method", "outcome"],
        "Calls through a resilient client, by target, route template and outcome (status class or the error).";
    HTTP_CLIENT_DURATION = "agora_http_client_request_duration_seconds", Histogram,
        ["service", "target", "route"],
        "Time a call through a resilient client took, retries included.";
    GATEWAY_REQUESTS = "agora_gateway_requests_total", Counter,
        ["service", "status"],
        "Requests answered by the gateway, by the service they were for and status.";
    GATEWAY_DURATION = "agora_gateway_request_duration_seconds", Histogram,
        ["service"],
        "Time the gateway took to answer, by the service the request was for.";
    ONLINE_USERS = "agora_online_users", Gauge, [],
        "Users signed in with an unexpired token.";
    CONSUMER_DELIVERIES = "agora_consumer_deliveries_total", Counter,
        ["service", "consumer", "outcome"],
        "Deliveries a consumer settled: acked, duplicate, retried or dead_lettered.";
    CONSUMER_REDELIVERIES = "agora_consumer_redeliveries_total", Counter,
        ["service", "consumer"],
        "Deliveries that were not a message's first.";
    CONSUMER_DEAD_LETTERS = "agora_consumer_dead_letters_total", Counter,
        ["service", "consumer"],
        "Messages a consumer gave up on (sent to the dead letters).";
    CONSUMER_HANDLER_DURATION = "agora_consumer_handler_duration_seconds", Histogram,
        ["service", "consumer"],
        "Time a handler took on one delivery (inbox check included).";
    CONSUMER_PENDING = "agora_consumer_pending", Gauge,
        ["service", "consumer"],
        "Consumer lag: messages of its stream not yet delivered to it (sampled at scrape).";
    CONSUMER_ACK_PENDING = "agora_consumer_ack_pending", Gauge,
        ["service", "consumer"],
        "Messages delivered to a consumer and not yet acked (sampled at scrape).";
    CONSUMER_DEAD_LETTERS_WAITING = "agora_consumer_dead_letters_waiting", Gauge,
        ["service", "consumer"],
        "Dead letters of a consumer waiting to be redriven (sampled at scrape).";
    OUTBOX_PUBLISHED = "agora_outbox_published_total", Counter, ["service"],
        "Events the outbox relay published.";
    OUTBOX_RELAY_LATENCY = "agora_outbox_relay_latency_seconds", Histogram, ["service"],
        "Time from an event's commit in the outbox to its publication.";
    OUTBOX_BACKLOG = "agora_outbox_backlog", Gauge, ["service"],
        "Events committed and not yet published (sampled at scrape).";
    BREAKER_STATE = "agora_breaker_state", Gauge, ["service", "breaker"],
        "Circuit breaker state, set on each transition: 0 closed, 1 open, 2 half-open.";
    BREAKER_TRANSITIONS = "agora_breaker_transitions_total", Counter,
        ["service", "breaker", "to"],
        "Circuit breaker transitions, by the state entered.";
    CLIENT_RETRIES = "agora_client_retries_total", Counter, ["service", "target"],
        "Retries a resilient client made.";
    CLIENT_RETRY_BUDGET_EXHAUSTED = "agora_client_retry_budget_exhausted_total", Counter,
        ["service", "target"],
        "Retries not made because the retry budget was spent.";
    CLIENT_BULKHEAD_REJECTIONS = "agora_client_bulkhead_rejections_total", Counter,
        ["service", "target"],
        "Calls refused at once because the target's bulkhead was full.";
    CHECKOUT_OUTCOMES = "agora_checkout_outcomes_total", Counter, ["outcome", "reason"],
        "Checkouts (POST /api/ordering/orders) by outcome (accepted, refused, failed; replayed: a retry given its key's stored answer) and reason.";
    ORDERS = "agora_orders", Gauge, ["status"],
        "Orders by status (sampled at scrape).";
    ORDERS_OLDEST_OPEN_AGE = "agora_orders_oldest_open_age_seconds", Gauge, [],
        "Age of the oldest order not yet shipped or cancelled; 0 when none (sampled at scrape).";
    PROCESS_INSTANCES = "agora_process_instances", Gauge, ["service", "process", "status"],
        "Process-manager instances by status (sampled at scrape).";
    PROCESS_OVERDUE_TIMERS = "agora_process_overdue_timers", Gauge, ["service", "process"],
        "Active process-manager instances whose timeout is due and not handled yet (sampled at scrape).";
}

/// The family `name` belongs to, if Agora exports it: `name` itself, or a histogram's
/// `_bucket`, `_sum` or `_count` series.
pub fn family_of(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|family| {
        family.name == name
            || (family.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.name)))
    })
}

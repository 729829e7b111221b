//! SQLite's group commit in one round trip. Every statement through sqlx's SQLite driver is a round trip to its
//! worker thread, and on a busy machine each costs a thread wake-up. A publish with attempt records written
//! statement by statement takes seven (begin, endpoint check, events, deliveries, delivery updates, attempts,
//! commit), all on the one path every publish waits for. Here they are one script, sent and run as one command:
//! the decisions that needed a result in between (which endpoints still exist, which leases are still held, which
//! idempotency keys were used before) are made by the statements themselves.
//!
//! [`publish`](super::SqlStore) and `record_attempts` on SQLite are this script without the other half, so the
//! conformance suite covers each half alone and both together. Statements whose rows are empty are left out (see
//! `Parts`). PostgreSQL runs the statements one by one (`events`, `dispatch`): it cannot take several statements
//! with parameters in one command.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use sqlx::Row;

use super::cache::ReadCache;
use super::dialect::{script_statements, Column, WriteConnection};
use super::dispatch::{
    attempt_rows, disabled_audit_entry, outcome_rows, update_from_outcomes, Preparation, ATTEMPT_ROWS, OUTCOME_ROWS,
};
use super::events::{delivery_rows, distinct_types, insert_deliveries_from, DELIVERY_ROWS};
use super::query::{json_rows, Payloads};
use super::rows::{ATTEMPT_COLUMNS, AUDIT_COLUMNS};
use super::Dialect;
use crate::model::{new_id, Event};
use crate::store::{
    AttemptOutcome, NewDelivery, NewEvent, Published, StoreError, StoreResult, ENDPOINT_DISABLED, SERVER_ACTOR,
};

const EVENT_ROWS: &[(&str, Column)] = &[
    ("id", Column::Text),
    ("tenant_id", Column::Text),
    ("event_type", Column::Text),
    // Where the event's payload lies in `$10`, the batch's payloads end to end (see `Payloads`).
    ("data_start", Column::Int),
    ("data_length", Column::Int),
    ("idempotency_key", Column::Text),
    ("received_at", Column::Int),
    // A JSON array of the endpoint ids the event was matched to.
    ("endpoints", Column::Text),
];
const EVENT_TYPE_ROWS: &[(&str, Column)] = &[("tenant_id", Column::Text), ("name", Column::Text), ("at", Column::Int)];
const KEY_ROWS: &[(&str, Column)] = &[("tenant_id", Column::Text), ("key", Column::Text)];
const DISABLE_ROWS: &[(&str, Column)] = &[
    ("tenant_id", Column::Text),
    ("delivery_id", Column::Text),
    ("at", Column::Int),
    // The audit entry's id and details, should this attempt be the one that disables its endpoint.
    ("audit_id", Column::Text),
    ("details", Column::Text),
];

script_statements! {
    /// The statements, in order. Only `AttemptsStored`, `Results` and `GoneEndpoints` return a row: every row
    /// crosses from SQLite's worker thread one by one (and may wake this task each time), so each answer is one row.
    ///
    /// What was stored follows from those rows without looking up every id: an event without an idempotency key is
    /// stored (or the whole transaction fails on its id); one with a key is stored unless the key's event is another; a
    /// delivery is stored when its event is and its endpoint still exists. Only attempts are skipped one by one (a lost
    /// lease), which the count tells; which ones is asked only then.
    {
        Begin,
        /// Skips events whose idempotency key was used before.
        Events,
        EventTypes,
        /// Skips deliveries whose event was skipped or whose endpoint was deleted since the fan-out.
        Deliveries,
        /// Skips attempts whose lease is no longer held.
        Attempts,
        /// How many attempts were stored.
        AttemptsStored,
        /// The audit entries of the endpoints the batch disables, one per endpoint; `DisableEndpoints` follows them.
        AuditDisabled,
        DisableEndpoints,
        /// Outcomes without a prepared request: every retry's (it resends what the first attempt prepared).
        Outcomes,
        /// Outcomes that store a prepared request: every first attempt's, with the plugin versions it used (none, on an
        /// endpoint without plugins) and the transformed request, if a transform ran.
        PreparedOutcomes,
        /// The stored event of each idempotency key of the batch, and which of its endpoints no longer exist.
        Results,
        /// Which of the batch's endpoints no longer exist, for a batch without idempotency keys: `Results` would
        /// also look its empty key set up, a temporary table opened and closed for nothing.
        GoneEndpoints,
        Commit,
    }
}

use Statement::*;

impl Statement {
    /// Whether a batch with these `parts` needs the statement. One over an empty row set changes nothing, yet
    /// still costs its temporary tables and its statement journal, and most commits leave several sets empty.
    fn needed(self, parts: Parts) -> bool {
        match self {
            Begin | Commit => true,
            Events | Deliveries => parts.events,
            Results => parts.events && parts.keys,
            GoneEndpoints => parts.events && !parts.keys,
            EventTypes => parts.event_types,
            Attempts | AttemptsStored => parts.attempts,
            AuditDisabled | DisableEndpoints => parts.disabling,
            Outcomes => parts.plain_outcomes,
            PreparedOutcomes => parts.prepared_outcomes,
        }
    }

    fn sql(self) -> String {
        let rows = |placeholder: &str, columns| Dialect::Sqlite.json_rows(placeholder, columns);
        // The lease is still held: the condition under which an attempt is recorded at all. The attempt insert
        // and the endpoint update test it before the outcome update releases the lease.
        let held = "d.tenant_id = v.tenant_id AND d.lease_owner = $5 AND d.status = 'delivering'";
        match self {
            Begin => "BEGIN".into(),
            // The stored count is that of deliveries whose endpoint still exists, as the delivery insert decides.
            // The batch's endpoints are looked up once, not once per event; nearly always none is gone.
            // `WHERE true` tells SQLite's parser that ON CONFLICT is an upsert here, not a join constraint.
            Events => format!(
                "WITH {GONE} \
                 INSERT INTO events (id, tenant_id, event_type, data, idempotency_key, received_at, deliveries) \
                 SELECT v.id, v.tenant_id, v.event_type, {}, \
                 v.idempotency_key, v.received_at, \
                 CASE WHEN NOT EXISTS (SELECT 1 FROM gone) THEN json_array_length(v.endpoints) \
                 ELSE (SELECT COUNT(*) FROM json_each(v.endpoints) AS p \
                       WHERE p.value NOT IN (SELECT id FROM gone WHERE tenant_id = v.tenant_id)) END \
                 FROM ({}) AS v WHERE true \
                 ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
                Dialect::Sqlite.payload_at("$10", "v.data_start", "v.data_length"),
                rows("$1", EVENT_ROWS)
            ),
            AttemptsStored => "SELECT changes()".into(),
            EventTypes => format!(
                "INSERT INTO event_types (tenant_id, name, description, created_at) \
                 SELECT v.tenant_id, v.name, '', v.at FROM ({}) AS v WHERE true \
                 ON CONFLICT (tenant_id, name) DO NOTHING",
                rows("$2", EVENT_TYPE_ROWS)
            ),
            // An event not stored (its key was used before) gets no deliveries; nor does an endpoint deleted
            // since the fan-out. Each check only runs when it can fail: an event without a key is always stored
            // (`$11` says whether the batch has keys), and endpoints are looked up one by one only when one of
            // the batch's is gone. Nearly always neither holds, and each check per delivery was a JSON decode and
            // an index seek.
            Deliveries => format!(
                "WITH {GONE} {} WHERE ($11 = 0 OR EXISTS (SELECT 1 FROM events AS e WHERE e.id = v.event_id)) \
                 AND (NOT EXISTS (SELECT 1 FROM gone) \
                 OR EXISTS (SELECT 1 FROM endpoints AS e WHERE e.id = v.endpoint_id AND e.tenant_id = v.tenant_id))",
                insert_deliveries_from(&rows("$3", DELIVERY_ROWS))
            ),
            // The attempt's delivery id and tenant are read from the delivery row the lease check finds, where they
            // cost nothing; every mention of a `v` column decodes it from the JSON row again. CROSS JOIN keeps the
            // rows outermost, each looking its delivery up by id.
            Attempts => format!(
                "INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT v.id, d.tenant_id, d.id, v.attempt_number, \
                 v.started_at, v.duration_ms, v.status_code, v.response_body, v.error, v.outcome \
                 FROM ({}) AS v CROSS JOIN deliveries AS d ON d.id = v.delivery_id WHERE {held}",
                rows("$4", ATTEMPT_ROWS)
            ),
            // A 410 Gone (or a failing streak) disables the endpoint, if the attempt is recorded and the endpoint
            // is still active (an operator's pause made while the attempt was in flight stands). One attempt per
            // endpoint does it, the one with the least audit id: its entry is written here, and the endpoint takes
            // its reason and time from that entry, so the two always agree.
            AuditDisabled => format!(
                "INSERT INTO audit_log ({AUDIT_COLUMNS}) \
                 SELECT v.audit_id, d.tenant_id, '{SERVER_ACTOR}', '{ENDPOINT_DISABLED}', 'endpoint', d.endpoint_id, \
                 v.details, v.at FROM ({rows}) AS v CROSS JOIN deliveries AS d ON d.id = v.delivery_id \
                 WHERE {held} \
                 AND EXISTS (SELECT 1 FROM endpoints AS e WHERE e.id = d.endpoint_id AND e.status = 'active') \
                 AND v.audit_id = (SELECT MIN(w.audit_id) FROM ({rows}) AS w \
                   CROSS JOIN deliveries AS x ON x.id = w.delivery_id \
                   WHERE x.endpoint_id = d.endpoint_id AND x.tenant_id = w.tenant_id AND x.lease_owner = $5 \
                   AND x.status = 'delivering')",
                rows = rows("$6", DISABLE_ROWS)
            ),
            DisableEndpoints => format!(
                "UPDATE endpoints SET status = 'disabled', status_reason = a.details ->> '$.reason', updated_at = a.at \
                 FROM audit_log AS a WHERE a.id IN (SELECT v.audit_id FROM ({}) AS v) \
                 AND endpoints.id = a.resource_id AND endpoints.tenant_id = a.tenant_id AND endpoints.status = 'active'",
                rows("$6", DISABLE_ROWS)
            ),
            Outcomes => update_from_outcomes(&rows("$7", OUTCOME_ROWS), "$5", false, Preparation::Absent),
            PreparedOutcomes => update_from_outcomes(&rows("$12", OUTCOME_ROWS), "$5", false, Preparation::Present),
            Results => format!(
                "WITH {GONE} SELECT \
                 (SELECT json_group_array(json_array(v.tenant_id, v.key, e.id, e.deliveries)) FROM ({}) AS v \
                  JOIN events AS e ON e.tenant_id = v.tenant_id AND e.idempotency_key = v.key), \
                 (SELECT json_group_array(json_array(tenant_id, id)) FROM gone)",
                rows("$8", KEY_ROWS)
            ),
            GoneEndpoints => format!("WITH {GONE} SELECT json_group_array(json_array(tenant_id, id)) FROM gone"),
            Commit => "COMMIT".into(),
        }
    }
}

/// The CTE `gone`: which of the batch's endpoints (`$9`, `[tenant_id, id]` rows) no longer exist.
/// Not forced into a temporary table: the statements mostly ask it as an uncorrelated `EXISTS`, which SQLite
/// evaluates once, and the three temporary tables cost more than the lookups (without the `MATERIALIZED` hint a
/// one-event commit takes 6.6 % fewer instructions). SQLite still decides for itself where one pays.
const GONE: &str = "gone AS (SELECT v.tenant_id, v.id FROM (SELECT r.value ->> 0 AS tenant_id, \
     r.value ->> 1 AS id FROM json_each($9) AS r) AS v \
     WHERE NOT EXISTS (SELECT 1 FROM endpoints AS e WHERE e.id = v.id AND e.tenant_id = v.tenant_id))";

/// The delivery ids of the batch's attempts (`$1`) that were stored, asked after the commit when fewer were stored
/// than sent. Attempt ids are fresh, so one found was stored by that transaction, its lease held and its outcome
/// applied too.
const STORED_ATTEMPTS: &str =
    "SELECT json_group_array(a.delivery_id) FROM json_each($1) AS i JOIN attempts AS a ON a.id = i.value";

/// Which row sets of a batch are not empty: what decides the statements its script runs.
#[derive(Clone, Copy)]
struct Parts {
    events: bool,
    /// Whether any of the events has an idempotency key.
    keys: bool,
    event_types: bool,
    attempts: bool,
    disabling: bool,
    plain_outcomes: bool,
    prepared_outcomes: bool,
}

impl Parts {
    const VARIANTS: usize = 1 << 7;

    fn statements(self) -> impl Iterator<Item = Statement> {
        ALL.iter().copied().filter(move |statement| statement.needed(self))
    }

    /// Where `statement`'s rows are among the script's, if it runs.
    fn position(self, statement: Statement) -> Option<usize> {
        self.statements().position(|running| running as usize == statement as usize)
    }

    /// Built once per variant: the same text for the same parts, so the connection's statement cache keeps each
    /// prepared. A router writes a handful of them: publishes, attempts, or both, and now and then the rarer sets.
    fn script(self) -> &'static str {
        static SCRIPTS: [OnceLock<String>; Parts::VARIANTS] = [const { OnceLock::new() }; Parts::VARIANTS];
        let flags = [
            self.events,
            self.keys,
            self.event_types,
            self.attempts,
            self.disabling,
            self.plain_outcomes,
            self.prepared_outcomes,
        ];
        let variant = flags.iter().enumerate().fold(0, |bits, (bit, &set)| bits | (usize::from(set) << bit));
        SCRIPTS[variant].get_or_init(|| self.statements().map(Statement::sql).collect::<Vec<_>>().join(";\n"))
    }
}

/// Publishes `events` and records `outcomes` in one transaction, in one command to the connection's worker.
/// Same semantics as `events::publish` followed by `dispatch::record_attempts`.
pub(super) async fn write(
    connection: &mut WriteConnection<'_>,
    cache: &ReadCache,
    events: &[NewEvent],
    owner: &str,
    outcomes: &[AttemptOutcome],
) -> StoreResult<(Vec<Published>, Vec<bool>)> {
    let mut payloads = Payloads::with_capacity(events.iter().map(|new| new.event.data.get().len()).sum());
    let event_rows = events
        .iter()
        .map(|new| {
            let event = &new.event;
            let endpoints: Vec<&str> = new.deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
            let (data_start, data_length) = payloads.push(event.data.get());
            Ok((
                &event.id,
                &event.tenant_id,
                &event.event_type,
                data_start,
                data_length,
                event.idempotency_key.as_deref(),
                event.received_at,
                json_rows(&endpoints)?,
            ))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let first_seen = events.iter().map(|new| new.event.received_at).min().unwrap_or_default();
    let types: Vec<(&str, &str, i64)> = distinct_types(events)
        .into_iter()
        .filter(|(tenant_id, name)| !cache.event_type_known(tenant_id, name))
        .map(|(tenant_id, name)| (tenant_id, name, first_seen))
        .collect();
    let deliveries: Vec<(&Event, &NewDelivery)> =
        events.iter().flat_map(|new| new.deliveries.iter().map(move |d| (&new.event, d))).collect();
    let keys: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|new| Some((new.event.tenant_id.as_str(), new.event.idempotency_key.as_deref()?)))
        .collect();
    let (prepared_outcomes, plain_outcomes): (Vec<&AttemptOutcome>, Vec<&AttemptOutcome>) =
        outcomes.iter().partition(|o| o.prepared.is_some());
    let disabling = outcomes
        .iter()
        .filter(|o| o.disable_endpoint.is_some())
        .map(|o| {
            // The endpoint is found by the script; the entry is built here, with its id, like any other.
            let entry = disabled_audit_entry(o, "", new_id("aud"));
            let details = serde_json::to_string(&entry.details).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((o.attempt.tenant_id.as_str(), o.attempt.delivery_id.as_str(), entry.at, entry.id, details))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let batch_endpoints: BTreeSet<(&str, &str)> =
        deliveries.iter().map(|(event, d)| (event.tenant_id.as_str(), d.endpoint_id.as_str())).collect();

    let parts = Parts {
        events: !events.is_empty(),
        keys: !keys.is_empty(),
        event_types: !types.is_empty(),
        attempts: !outcomes.is_empty(),
        disabling: !disabling.is_empty(),
        plain_outcomes: !plain_outcomes.is_empty(),
        prepared_outcomes: !prepared_outcomes.is_empty(),
    };
    let query = sqlx::query(parts.script())
        .bind(json_rows(&event_rows)?)
        .bind(json_rows(&types)?)
        .bind(json_rows(&delivery_rows(&deliveries))?)
        .bind(json_rows(&attempt_rows(outcomes.iter().map(|o| &o.attempt)))?)
        .bind(owner)
        .bind(json_rows(&disabling)?)
        .bind(json_rows(&outcome_rows(&plain_outcomes)?)?)
        .bind(json_rows(&keys)?)
        .bind(json_rows(&batch_endpoints.into_iter().collect::<Vec<_>>())?)
        .bind(payloads.into_bytes())
        .bind(i64::from(!keys.is_empty()))
        .bind(json_rows(&outcome_rows(&prepared_outcomes)?)?);
    let statements = parts.statements().count();
    let returned = connection.run_script(query, statements, "group commit").await.map_err(|error| match error {
        StoreError::Database(e) if e.as_database_error().is_some_and(|db| db.is_unique_violation()) => {
            StoreError::Conflict("an event or delivery id already exists".into())
        }
        other => other,
    })?;

    // Committed: from here on an error must not make the caller write the batch again.
    let only_row = |statement: Statement| match parts.position(statement).map(|at| &returned[at][..]) {
        Some([row]) => Ok(Some(row)),
        Some(rows) => Err(StoreError::Corrupt(format!("the group commit returned {} rows for one", rows.len()))),
        None => Ok(None),
    };
    // Without attempts, none were stored and none were asked for.
    let attempts_stored = only_row(AttemptsStored)?.map(|row| row.try_get::<i64, _>(0)).transpose()?.unwrap_or(0);
    // Without events there are no keys to answer for and no endpoints that could be gone.
    let results = only_row(Results)?;
    let replays: Vec<(String, String, String, i64)> =
        results.map(|row| parse_results(row.try_get(0)?)).transpose()?.unwrap_or_default();
    let gone_column = match (results, only_row(GoneEndpoints)?) {
        (Some(row), _) => Some((row, 1)),
        (None, row) => row.map(|row| (row, 0)),
    };
    let gone: Vec<(String, String)> =
        gone_column.map(|(row, column)| parse_results(row.try_get(column)?)).transpose()?.unwrap_or_default();
    let mut by_key: HashMap<(&str, &str), (String, i64)> = HashMap::new();
    for (tenant, key, id, deliveries) in &replays {
        by_key.insert((tenant, key), (id.clone(), *deliveries));
    }
    let endpoint_gone = |tenant: &str, id: &str| gone.iter().any(|(t, e)| t == tenant && e == id);

    let mut published = Vec::with_capacity(events.len());
    for new in events {
        let event = &new.event;
        let earlier = match &event.idempotency_key {
            None => None,
            Some(key) => match by_key.get(&(event.tenant_id.as_str(), key.as_str())) {
                Some((id, _)) if *id == event.id => None,
                Some(found) => Some(found),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "event `{}` was neither stored nor found by its key",
                        event.id
                    )))
                }
            },
        };
        if let Some((event_id, deliveries)) = earlier {
            published.push(Published {
                event_id: event_id.clone(),
                deliveries: *deliveries,
                replayed: true,
                leased: Vec::new(),
            });
            continue;
        }
        let stored: Vec<&NewDelivery> =
            new.deliveries.iter().filter(|d| !endpoint_gone(&event.tenant_id, &d.endpoint_id)).collect();
        published.push(Published {
            event_id: event.id.clone(),
            deliveries: stored.len() as i64,
            replayed: false,
            leased: stored.iter().filter(|d| d.lease.is_some()).map(|d| d.id.clone()).collect(),
        });
    }
    let recorded = if attempts_stored == outcomes.len() as i64 {
        vec![true; outcomes.len()]
    } else {
        stored_attempts(connection, outcomes).await
    };
    Ok((published, recorded))
}

fn parse_results<T: serde::de::DeserializeOwned>(text: String) -> StoreResult<T> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("group commit results: {e}")))
}

/// Which `outcomes` were recorded, after a commit that stored fewer attempts than it was given. If that cannot be
/// read, they count as not recorded: their deliveries are then attempted again when their leases expire, or
/// (if recorded after all) follow what was stored; writing the batch again instead would duplicate its events.
async fn stored_attempts(connection: &mut WriteConnection<'_>, outcomes: &[AttemptOutcome]) -> Vec<bool> {
    let asked = async {
        let ids = json_rows(&outcomes.iter().map(|o| &o.attempt.id).collect::<Vec<_>>())?;
        let text: String = sqlx::query(STORED_ATTEMPTS).bind(ids).fetch_one(&mut **connection).await?.try_get(0)?;
        parse_results::<HashSet<String>>(text)
    };
    match asked.await {
        Ok(recorded) => outcomes.iter().map(|o| recorded.contains(&o.attempt.delivery_id)).collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read which attempts a group commit recorded; counting none");
            vec![false; outcomes.len()]
        }
    }
}

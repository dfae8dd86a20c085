//! The OpenAPI document that describes the API, built from the handlers' own
//! annotations so that it cannot drift from them.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{QueueOrPartition, admin, consume, events, produce};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dmq",
        description = "dmq's broker over HTTP: enqueue jobs, claim and settle them under fenced \
                       leases, and operate the queues. Every endpoint but /health and this \
                       document takes `Authorization: Bearer <token>`.",
    ),
    paths(
        produce::enqueue, produce::enqueue_batch, produce::job, produce::result, produce::cancel,
        consume::claim, consume::renew, consume::ack, consume::nack, consume::release,
        admin::queues, admin::queue, admin::purge, admin::pause, admin::resume, admin::gates,
        admin::dead_letters,
        admin::requeue_dead_letter, admin::requeue_all, admin::delete_dead_letter,
        admin::purge_dead_letters, admin::delete_queue, admin::workers, admin::schedules, events::events,
    ),
    components(schemas(QueueOrPartition)),
    modifiers(&Bearer, &OneTime),
    tags(
        (name = "produce", description = "Enqueue jobs and read their results (scope produce)"),
        (name = "consume", description = "Claim and settle jobs under leases (scope consume)"),
        (name = "admin", description = "Queues, workers, schedules, dead letters, events (scope admin)"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What `EnqueueRequest`'s derived schema cannot say: a job gives `eta` or `delay_ms`,
/// not both (either may be null), and neither when it is debounced.
struct OneTime;

impl Modify for OneTime {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        // Each form of `unique` takes its own fields only, as the server does.
        if let Some(RefOr::T(Schema::OneOf(forms))) = components.schemas.get_mut("UniqueRequest") {
            for form in &mut forms.items {
                if let RefOr::T(Schema::Object(form)) = form {
                    form.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
        let Some(job) = components.schemas.remove("EnqueueRequest") else { return };
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let one = AnyOfBuilder::new()
            .item(ObjectBuilder::new().property("eta", null()))
            .item(ObjectBuilder::new().property("delay_ms", null()))
            .description(Some("Not both `eta` and `delay_ms`."));
        // A debounce sets the delay itself.
        let not_debounced = ObjectBuilder::new().property(
            "unique",
            AnyOfBuilder::new().item(null()).item(ObjectBuilder::new().property(
                "for",
                ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                    "queued",
                    "until_done",
                    "ttl",
                ])),
            )),
        );
        let undelayed = ObjectBuilder::new()
            .property("eta", null())
            .property("delay_ms", null())
            .property("id", null());
        let debounce = AnyOfBuilder::new()
            .item(not_debounced)
            .item(undelayed)
            .description(Some("A debounce (`unique.for`) with no `eta`, `delay_ms` or `id`."));
        let job = AllOfBuilder::new().item(job).item(one).item(debounce);
        components.schemas.insert("EnqueueRequest".to_owned(), job.into());
    }
}

/// The OpenAPI document, as JSON text.
#[must_use]
pub fn openapi_json() -> &'static str {
    // Built once: the document is the same for every request.
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            // Cannot happen: the document is plain data.
            format!("{{\"error\": \"the OpenAPI document did not encode: {e}\"}}")
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn the_document_states_the_rules_its_derives_cannot() {
        let document: Value = serde_json::from_str(super::openapi_json()).unwrap();
        let job = &document["components"]["schemas"]["EnqueueRequest"]["allOf"];
        assert_eq!(job[1]["anyOf"][0]["properties"]["eta"]["type"], "null", "{job}");
        let longest = &job[0]["properties"]["delay_ms"]["maximum"];
        let max_delay = u64::try_from(crate::limits::MAX_DELAY.as_millis()).unwrap();
        assert_eq!(longest.as_u64(), Some(max_delay), "{job}");
        let queue = &document["components"]["schemas"]["QueueOrPartition"]["pattern"];
        assert!(queue.as_str().is_some_and(|p| p.ends_with("(#[0-9]+)?$")), "{queue}");
    }
}

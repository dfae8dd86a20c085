//! The OpenAPI document that describes the API, built from the handlers' own
//! annotations so that it cannot drift from them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{admin, consume, events, produce};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dmq",
        description = "dmq's broker over HTTP: enqueue jobs, claim and settle them under fenced \
                       leases, and operate the queues. Every endpoint but /health and this \
                       document takes `Authorization: Bearer <token>`.",
    ),
    paths(
        produce::enqueue, produce::enqueue_batch, produce::job, produce::result,
        consume::claim, consume::renew, consume::ack, consume::nack, consume::release,
        admin::queues, admin::queue, admin::purge, admin::dead_letters,
        admin::requeue_dead_letter, admin::requeue_all, admin::delete_dead_letter,
        admin::purge_dead_letters, admin::workers, admin::schedules, events::events,
    ),
    modifiers(&Bearer),
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

/// The OpenAPI document, as JSON text.
#[must_use]
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
        // Cannot happen: the document is plain data.
        format!("{{\"error\": \"the OpenAPI document did not encode: {e}\"}}")
    })
}

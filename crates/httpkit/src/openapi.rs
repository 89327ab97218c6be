//! What every service's OpenAPI document shares.

use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Declares the `bearer` security scheme (a JWT in `Authorization: Bearer …`) that
/// paths name with `security(("bearer" = []))`: `#[openapi(modifiers(&BearerSecurity))]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use utoipa::Modify;

    use super::*;

    #[test]
    fn the_scheme_is_http_bearer_with_jwts() {
        let mut doc = OpenApi::default();
        BearerSecurity.modify(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"],
            serde_json::json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
        );
    }
}

//! Product handlers: register, list, read and delete product versions, and upload or
//! download their parts (template, options, orchestration script).
//!
//! An uploaded template or options document is checked against its counterpart, so a
//! product never holds a pair that a launch with defaults could not render.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{
    Body, Resp, json_body, json_response, object, parse_json, raw_response, read_body,
    with_location,
};
use super::error::ApiError;
use super::routes::BASE;
use super::{AppState, blocking};
use crate::domain::launch_request::{self, RenderError};
use crate::domain::options::OptionsDoc;
use crate::domain::{Name, Part, Product, Timestamp};
use crate::registry::Store;

/// Longest product description, in bytes.
pub(super) const MAX_DESCRIPTION: usize = 4096;

pub(super) fn product_url(p: &Product) -> String {
    format!("{BASE}/products/{}/{}", p.name, p.version)
}

/// The served form of a product: the record plus its URL.
#[derive(Debug, Serialize)]
pub(super) struct ProductView<'a> {
    #[serde(flatten)]
    product: &'a Product,
    url: String,
}

pub(super) fn product_view(p: &Product) -> ProductView<'_> {
    ProductView {
        product: p,
        url: product_url(p),
    }
}

/// The product version, or 404.
pub(super) async fn get_product(
    state: &AppState,
    name: &Name,
    version: &Name,
) -> Result<Product, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    on_store(state, move |s| product_of(s, &n, &v)).await
}

/// [`get_product`] on a blocking thread.
pub(super) fn product_of(s: &dyn Store, name: &Name, version: &Name) -> Result<Product, ApiError> {
    s.product(name, version)?
        .ok_or_else(|| ApiError::NotFound(format!("product {name}/{version} not found")))
}

/// [`blocking`] for a function that answers in the API's terms.
async fn on_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(state, move |s| Ok(f(s))).await?
}

/// `GET /products`.
pub(super) async fn list(state: &AppState) -> Result<Resp, ApiError> {
    let all = blocking(state, |s| s.products()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"products": all.iter().map(product_view).collect::<Vec<_>>()}),
    ))
}

/// `GET /products/{name}`: the versions of one product.
pub(super) async fn versions(state: &AppState, name: Name) -> Result<Resp, ApiError> {
    let all = blocking(state, |s| s.products()).await?;
    let versions: Vec<&str> = all
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.version.as_str())
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("product {name} not found")));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "versions": versions}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductCreate {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    logo_url: Option<String>,
}

/// `POST /products`: registers a version, parts still to upload.
pub(super) async fn create(state: &AppState, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = json_body(state, req).await?;
    let body = object(body, "a product")?;
    let p: ProductCreate = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request("invalid_product", format!("invalid product: {e}")))?;
    let bad_name = |field: &str, e: crate::domain::NameError| ApiError::BadRequest {
        code: "invalid_name",
        message: format!("invalid {field}: {e}"),
        details: Some(json!({"field": field, "pattern": "^[a-z0-9][a-z0-9._-]*$"})),
    };
    let name = Name::parse(&p.name).map_err(|e| bad_name("name", e))?;
    let version = Name::parse(&p.version).map_err(|e| bad_name("version", e))?;
    if p.description.len() > MAX_DESCRIPTION {
        return Err(ApiError::bad_request(
            "invalid_product",
            format!("description is longer than {MAX_DESCRIPTION} bytes"),
        ));
    }
    let now = Timestamp::now();
    let product = Product {
        name,
        version,
        description: p.description,
        logo_url: p.logo_url,
        created_at: now.clone(),
        updated_at: now,
        parts: Default::default(),
        files: None,
    };
    let stored = product.clone();
    blocking(state, move |s| s.create_product(&stored)).await?;
    let view = product_view(&product);
    Ok(with_location(
        json_response(StatusCode::CREATED, &view),
        &product_url(&product),
    ))
}

/// `DELETE /products/{name}/{version}`: refused while live clusters use it.
pub(super) async fn delete(state: &AppState, name: Name, version: Name) -> Result<Resp, ApiError> {
    let result = blocking(state, move |s| {
        s.delete_product(&name, &version, &|users| {
            let live: Vec<String> = users
                .iter()
                .filter(|c| c.status.is_live())
                .map(|c| c.id.to_string())
                .collect();
            if live.is_empty() {
                Ok(())
            } else {
                Err(live.join(","))
            }
        })
    })
    .await;
    match result {
        Ok(()) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        // The guard's refusal carries the live cluster ids.
        Err(ApiError::Conflict { message, .. }) => Err(ApiError::Conflict {
            message: "live clusters still use this product; destroy them first".into(),
            details: Some(json!({"clusters": message.split(',').collect::<Vec<_>>()})),
        }),
        Err(e) => Err(e),
    }
}

/// `PUT /products/{name}/{version}/{part}`.
pub(super) async fn put_part(
    state: &AppState,
    name: Name,
    version: Name,
    part: Part,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    // Parts are stored as uploaded, whatever the Content-Type: the seed uploads a Python
    // script as `application/json`, and `curl --data-binary` alone sends a form type. A
    // browser cannot send a cross-site PUT without asking first, so no type check is owed.
    let body = read_body(state, req).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            format!("the {} is empty", part.as_str()),
        ));
    }
    let product = get_product(state, &name, &version).await?;
    let stored: Vec<u8> = match part {
        Part::Orchestrator => body.to_vec(),
        Part::Template => {
            let text = std::str::from_utf8(&body).map_err(|e| {
                ApiError::bad_request("invalid_template", format!("template is not UTF-8: {e}"))
            })?;
            handlebars::Template::compile(text).map_err(|e| {
                ApiError::bad_request(
                    "invalid_template",
                    crate::domain::template::TemplateError::from(e).to_string(),
                )
            })?;
            // With options known, the template must render with their defaults into a valid
            // spec now. Without them (the seed uploads the template first) the check runs
            // when the options arrive.
            if product.parts.options {
                let doc = load_options(state, &name, &version).await?;
                check_template(state, &product, text, &doc)
                    .map_err(|m| ApiError::bad_request("invalid_template", m))?;
            }
            body.to_vec()
        }
        Part::Options => {
            let doc = OptionsDoc::from_value(parse_json(&body)?)
                .map_err(|e| ApiError::bad_request("invalid_options", e.to_string()))?;
            if product.parts.template {
                let template = load_template(state, &name, &version).await?;
                check_template(state, &product, &template, &doc).map_err(|m| {
                    ApiError::bad_request(
                        "invalid_template",
                        format!("the stored template does not render with these options: {m}"),
                    )
                })?;
            }
            serde_json::to_vec_pretty(&doc).map_err(|e| ApiError::Internal(Box::new(e)))?
        }
    };
    let now = Timestamp::now();
    let updated = blocking(state, move |s| {
        s.put_part(&name, &version, part, &stored, &now)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &product_view(&updated)))
}

/// Checks that `template` renders with the defaults of `doc` into a valid spec, as a launch
/// would; the error is the client's message.
pub(super) fn check_template(
    state: &AppState,
    p: &Product,
    template: &str,
    doc: &OptionsDoc,
) -> Result<(), String> {
    launch_request::check_template(&state.renderer, p, template, doc, &state.node_image)
        .map(drop)
        .map_err(|e| match e {
            RenderError::Template(e) => e.to_string(),
            RenderError::Spec(e) => e.to_string(),
        })
}

/// The stored options document; the empty one when none was uploaded.
pub(super) async fn load_options(
    state: &AppState,
    name: &Name,
    version: &Name,
) -> Result<OptionsDoc, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    on_store(state, move |s| options_of(s, &n, &v)).await
}

/// [`load_options`] on a blocking thread.
pub(super) fn options_of(
    s: &dyn Store,
    name: &Name,
    version: &Name,
) -> Result<OptionsDoc, ApiError> {
    match s.part(name, version, Part::Options)? {
        None => Ok(OptionsDoc::default()),
        Some(bytes) => {
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(Box::new(e)))?;
            OptionsDoc::from_value(v).map_err(|e| ApiError::Internal(Box::new(e)))
        }
    }
}

/// The stored template; 409 when none was uploaded.
pub(super) async fn load_template(
    state: &AppState,
    name: &Name,
    version: &Name,
) -> Result<String, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    on_store(state, move |s| template_of(s, &n, &v)).await
}

/// [`load_template`] on a blocking thread.
pub(super) fn template_of(s: &dyn Store, name: &Name, version: &Name) -> Result<String, ApiError> {
    let bytes = s
        .part(name, version, Part::Template)?
        .ok_or_else(|| ApiError::Conflict {
            message: format!("product {name}/{version} has no template; PUT one first"),
            details: None,
        })?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(Box::new(e)))
}

/// `GET /products/{name}/{version}/{part}`: the part as uploaded.
pub(super) async fn get_part(
    state: &AppState,
    name: Name,
    version: Name,
    part: Part,
) -> Result<Resp, ApiError> {
    get_product(state, &name, &version).await?;
    let (n, v) = (name.clone(), version.clone());
    let bytes = blocking(state, move |s| s.part(&n, &v, part))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("product {name}/{version} has no {}", part.as_str()))
        })?;
    let ct = match part {
        Part::Options => "application/json",
        Part::Template | Part::Orchestrator if std::str::from_utf8(&bytes).is_ok() => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    };
    Ok(raw_response(bytes, ct))
}

/// `GET /products/{name}/{version}`.
pub(super) async fn get(state: &AppState, name: Name, version: Name) -> Result<Resp, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &product_view(&get_product(state, &name, &version).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view is the record plus its URL, in the record's order.
    #[test]
    fn the_view_is_the_record_and_its_url() {
        let now = Timestamp("2026-12-01T12:00:00.000Z".into());
        let mut p = Product {
            name: Name::parse("reference").unwrap(),
            version: Name::parse("1.0.0").unwrap(),
            description: "d".into(),
            logo_url: Some("http://x/logo.png".into()),
            created_at: now.clone(),
            updated_at: now,
            parts: Default::default(),
            files: None,
        };
        p.parts.set(Part::Template);
        let mut want = serde_json::to_value(&p).unwrap();
        want["url"] = json!("/bigdata/api/v1/products/reference/1.0.0");
        assert_eq!(
            serde_json::to_string_pretty(&product_view(&p)).unwrap(),
            serde_json::to_string_pretty(&want).unwrap()
        );
    }
}

//! The two forms an XML endpoint speaks. JSON: the document in a string field of a JSON
//! body, the answer a JSON object. Raw: the document itself as the body
//! (`Content-Type: application/xml`, `text/xml` or `application/soap+xml`), the options as
//! query parameters, and the signed document back as `application/xml` with what the
//! JSON answer would say in `X-Hsm-Signer-*` headers, so a caller never escapes megabytes
//! into JSON. Errors are JSON in both forms.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// How a request arrived, and so how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// A JSON body (any Content-Type other than the XML ones, as before raw XML existed).
    Json,
    /// The document itself.
    Raw,
}

impl Form {
    /// Raw for the XML media types, JSON for anything else.
    pub(super) fn of(headers: &HeaderMap) -> Form {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        match media.as_deref() {
            Some("application/xml" | "text/xml" | "application/soap+xml") => Form::Raw,
            _ => Form::Json,
        }
    }
}

/// Splits a request into its document and its options: from the JSON body `J` (whose
/// `split` gives both), or from the raw body and the query parameters `Q`. A query on
/// a JSON request is refused rather than ignored.
pub(super) fn decode<J, Q, O>(
    form: Form,
    uri: &Uri,
    body: Bytes,
    what: &str,
    split: impl FnOnce(J) -> (Bytes, O),
    options: impl FnOnce(Q) -> O,
) -> Result<(Bytes, O), ApiError>
where
    J: DeserializeOwned,
    Q: DeserializeOwned,
{
    match form {
        Form::Json => {
            if uri.query().is_some_and(|q| !q.is_empty()) {
                return Err(ApiError::bad_request(
                    "query parameters go with an application/xml body; in a JSON body, send the options as its fields",
                ));
            }
            let request: J = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("the body is not a valid {what} request: {e}"))
            })?;
            Ok(split(request))
        }
        Form::Raw => {
            let Query(query) = Query::<Q>::try_from_uri(uri).map_err(|e| {
                ApiError::bad_request(format!(
                    "bad query parameters for {what}: {}",
                    e.body_text()
                ))
            })?;
            Ok((body, options(query)))
        }
    }
}

/// Bytes a header value cannot carry as they are (controls, non-ASCII), and `%` itself,
/// are percent-encoded.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b'%');

/// What an endpoint says about a document it signed, besides the document.
pub(super) trait Metadata {
    /// The JSON answer.
    type Json: Serialize;
    /// The JSON answer, with the document in it.
    fn json(self, document: String) -> Self::Json;
    /// The raw answer's headers: `X-Hsm-Signer-<name>: <value>`, name in lower case.
    fn headers(&self) -> Vec<(&'static str, String)>;
}

/// A signed document and its metadata, answered in the request's form. The document is
/// held once: it goes into the JSON answer or becomes the raw body.
pub(super) struct Answer<M> {
    /// How the request came.
    pub form: Form,
    /// What the endpoint says about it.
    pub meta: M,
    /// The signed document, to send byte for byte.
    pub document: String,
}

impl<M: Metadata> Answer<M> {
    /// The JSON object, or the document as `application/xml` with its headers.
    pub(super) fn into_response(self) -> Response {
        match self.form {
            Form::Json => {
                // Written once into a buffer with room for the escapes, rather than grown
                // by doubling (as `axum::Json` does, from 128 bytes), which held up to three
                // copies of a large document at once; the capacity left unused is never
                // touched, so costs no memory.
                let capacity = self.document.len() * 3 + 4096;
                let json = self.meta.json(self.document);
                let mut body = Vec::with_capacity(capacity);
                match serde_json::to_writer(&mut body, &json) {
                    Ok(()) => {
                        drop(json);
                        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                    }
                    Err(e) => ApiError::internal(&e).into_response(),
                }
            }
            Form::Raw => {
                let headers = self.meta.headers();
                let mut response = (
                    [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                    self.document,
                )
                    .into_response();
                for (name, value) in headers {
                    let name = HeaderName::try_from(format!("x-hsm-signer-{name}"));
                    let value = utf8_percent_encode(&value, HEADER_VALUE).to_string();
                    if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                        response.headers_mut().insert(name, value);
                    }
                }
                response
            }
        }
    }
}

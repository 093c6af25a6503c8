//! One JSON-RPC call as parsed from a request: its method, its args, and
//! the messages to send after the first, or why it is invalid.

use serde_json::Value as Json;

use super::CallError;

/// One parsed call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) args: Vec<Json>,
    /// `(message name, args)` to send after the opening message.
    pub(crate) chunks: Vec<(String, Vec<Json>)>,
}

impl Call {
    /// The call's id (`None`: a notification) and the call, or the id to
    /// answer with and why the call is invalid.
    #[allow(clippy::type_complexity)] // the two halves of JSON-RPC's rule
    pub(crate) fn parse(call: Json) -> Result<(Option<Json>, Self), (Option<Json>, CallError)> {
        let Json::Object(mut object) = call else {
            return Err((None, CallError::InvalidRequest("a call must be an object")));
        };
        let id = object.remove("id");
        if let Some(id) = &id
            && !matches!(id, Json::Null | Json::Number(_) | Json::String(_))
        {
            return Err((
                None,
                CallError::InvalidRequest("`id` must be a string, a number or null"),
            ));
        }
        let invalid = |what| Err((Some(id.clone().unwrap_or(Json::Null)), what));
        if object.get("jsonrpc").and_then(Json::as_str) != Some("2.0") {
            return invalid(CallError::InvalidRequest("`jsonrpc` must be \"2.0\""));
        }
        let Some(Json::String(method)) = object.remove("method") else {
            return invalid(CallError::InvalidRequest("`method` must be a string"));
        };
        let bad_params = |why: &str| CallError::InvalidParams(why.to_owned());
        let (args, chunks) = match object.remove("params") {
            None => (Vec::new(), Vec::new()),
            Some(Json::Array(args)) => (args, Vec::new()),
            Some(Json::Object(mut params)) => {
                let args = match params.remove("args") {
                    None => Vec::new(),
                    Some(Json::Array(args)) => args,
                    Some(_) => return invalid(bad_params("`args` must be an array")),
                };
                let chunks = match params.remove("chunks") {
                    None => Vec::new(),
                    Some(Json::Array(chunks)) => {
                        let mut parsed = Vec::with_capacity(chunks.len());
                        for chunk in chunks {
                            match chunk {
                                Json::Object(chunk) if chunk.len() == 1 => {
                                    for (name, args) in chunk {
                                        let Json::Array(args) = args else {
                                            return invalid(bad_params(
                                                "a chunk's args must be an array",
                                            ));
                                        };
                                        parsed.push((name, args));
                                    }
                                }
                                _ => {
                                    return invalid(bad_params(
                                        "a chunk must be {\"<message>\": [args]}",
                                    ));
                                }
                            }
                        }
                        parsed
                    }
                    Some(_) => return invalid(bad_params("`chunks` must be an array")),
                };
                if !params.is_empty() {
                    return invalid(bad_params("only `args` and `chunks` are known"));
                }
                (args, chunks)
            }
            Some(_) => return invalid(bad_params("`params` must be an array or an object")),
        };
        Ok((
            id,
            Self {
                method,
                args,
                chunks,
            },
        ))
    }
}
